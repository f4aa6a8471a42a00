"""Push streams: Server-Sent Events read with a real SSE client (sseclient-py).

Every test talks to a real daemon over HTTP.  A :class:`Listener` reads one
stream on a thread of its own, the way an app would, and keeps every event.
"""

import json
import os
import queue
import socket
import sys
import threading
import time

import pytest
import requests
import sseclient
from conftest import ALICE, BOB, Api, assert_status
from test_live_files import wait_for, write_by_hand

from kintofs.web.streams import SPARE_FILES

pytestmark = pytest.mark.daemon

COLLECTION = "/buckets/b/collections/c"
RECORDS = COLLECTION + "/records"


class Listener:
    """One subscriber: connects to ``path`` (under /v1) and collects its events."""

    def __init__(self, daemon, path, auth=ALICE, last_event_id=None, params=None):
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        self.response = requests.get(
            daemon.url + path, auth=auth, headers=headers, params=params, stream=True, timeout=30
        )
        self.events = queue.Queue()
        self.ended = threading.Event()
        if self.response.status_code == 200:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            # Bytes as they come (iterating the response waits for 128 of them).
            arriving = iter(lambda: self.response.raw.read1(1 << 16), b"")
            for event in sseclient.SSEClient(arriving).events():
                self.events.put(event)
        except (requests.RequestException, OSError, AttributeError):
            pass  # closed by the test (or the server)
        finally:
            self.ended.set()

    def take(self, count, timeout=10):
        """The next ``count`` events (fails if they do not come in time)."""
        found, deadline = [], time.monotonic() + timeout
        while len(found) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"got {len(found)} of {count} events: {found}"
            try:
                found.append(self.events.get(timeout=remaining))
            except queue.Empty:
                continue
        return found

    def nothing_more(self, wait=1.5):
        try:
            event = self.events.get(timeout=wait)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected event {event.event} {event.data}")

    def close(self):
        """Hang up.  A response read on another thread cannot simply be closed
        (urllib3 would wait for the read): its socket is shut down first."""
        if not self.ended.is_set() and self.response.status_code == 200:
            self.response.raw._fp.fp.raw._sock.shutdown(socket.SHUT_RDWR)
            self.ended.wait(10)
        self.response.close()


def changes(events):
    """``(action, uri, data)`` of each event, checking that every part is there."""
    found = []
    for event in events:
        body = json.loads(event.data)
        assert event.event == body["action"]
        assert body["timestamp"] == body["data"]["last_modified"]
        found.append((body["action"], body["uri"], body["data"]))
    return found


@pytest.fixture
def served(start_server):
    daemon = start_server()
    api = Api(daemon)
    assert_status(api.put("/buckets/b"), 201)
    assert_status(api.put(COLLECTION), 201)
    listeners = []

    def listen(path=COLLECTION, **kwargs):
        listener = Listener(daemon, "/events" + path, **kwargs)
        listeners.append(listener)
        return listener

    yield daemon, api, listen
    for listener in listeners:
        listener.close()


def put(api, record_id, **data):
    response = api.put(f"{RECORDS}/{record_id}", json={"data": data})
    assert response.status_code in (200, 201), response.text
    return response.json()["data"]


def test_a_stream_answers_as_a_stream_and_says_so_in_the_hello_view(served):
    daemon, api, listen = served
    stream = listen()
    assert stream.response.status_code == 200
    headers = stream.response.headers
    assert headers["Content-Type"].startswith("text/event-stream")
    assert headers["Cache-Control"] == "no-cache"
    assert headers["X-Accel-Buffering"] == "no"
    capability = api.get("/").json()["capabilities"]["push"]
    assert capability["streams"] == [
        "/v1/events",
        "/v1/events/buckets/{bucket}",
        "/v1/events/buckets/{bucket}/collections/{collection}",
    ]


def test_http_writes_reach_the_collection_stream_in_order(served):
    daemon, api, listen = served
    stream = listen()
    created = put(api, "r1", title="one")
    updated = put(api, "r1", title="two")
    deleted = assert_status(api.delete(f"{RECORDS}/r1"), 200).json()["data"]
    events = stream.take(3)
    assert changes(events) == [
        ("create", f"{RECORDS}/r1", created),
        ("update", f"{RECORDS}/r1", updated),
        ("delete", f"{RECORDS}/r1", deleted),
    ]
    assert [int(e.id) for e in events] == [
        created["last_modified"],
        updated["last_modified"],
        deleted["last_modified"],
    ]
    # A record list's _since at an event's id is what came after it.
    since = api.get(RECORDS, params={"_since": events[0].id}).json()["data"]
    assert since == [deleted]


def test_a_batch_reaches_every_stream_that_covers_it(served):
    daemon, api, listen = served
    collection, bucket, everything = listen(), listen("/buckets/b"), listen("")
    requests_ = [
        {"method": "PUT", "path": f"{RECORDS}/r{n}", "body": {"data": {"n": n}}} for n in range(5)
    ]
    requests_.append({"method": "PUT", "path": "/buckets/b/collections/other"})
    assert_status(api.post("/batch", json={"requests": requests_}), 200)
    record_uris = [f"{RECORDS}/r{n}" for n in range(5)]
    assert [uri for _, uri, _ in changes(collection.take(5))] == record_uris
    expected = sorted([*record_uris, "/buckets/b/collections/other"])
    assert sorted(uri for _, uri, _ in changes(bucket.take(6))) == expected
    assert sorted(uri for _, uri, _ in changes(everything.take(6))) == expected
    collection.nothing_more(0.5)


def test_a_hand_edit_reaches_the_stream(served):
    daemon, api, listen = served
    before = put(api, "r1", title="old")
    records = os.path.join(daemon.data_dir, "buckets", "b", "collections", "c", "records")
    stream = listen()
    write_by_hand(os.path.join(records, "r1.json"), dict(before, title="edited by hand"))
    ((action, uri, data),) = changes(stream.take(1))
    assert (action, uri, data["title"]) == ("update", f"{RECORDS}/r1", "edited by hand")
    assert data["last_modified"] > before["last_modified"]


def test_a_second_daemon_on_the_same_data_reaches_the_first_one_s_streams(served, start_server):
    daemon, api, listen = served
    stream, everything = listen(), listen("")
    second = Api(start_server(daemon.data_dir))
    created = put(second, "r1", title="from the second daemon")
    # Read from the journal, a write this process did not make is an upsert.
    assert changes(stream.take(1)) == [("update", f"{RECORDS}/r1", created)]
    ((_, uri, data),) = changes(everything.take(1))
    assert (uri, data) == (f"{RECORDS}/r1", created)


def test_a_reconnect_with_last_event_id_gets_exactly_what_it_missed(served):
    daemon, api, listen = served
    stream = listen()
    put(api, "first", n=0)
    (seen,) = stream.take(1)
    stream.close()
    missed = [put(api, f"r{n:02}", n=n) for n in range(50)]
    again = listen(last_event_id=seen.id)
    assert [data for _, _, data in changes(again.take(50))] == missed
    again.nothing_more(0.5)
    live = put(api, "after", n=51)
    assert [data for _, _, data in changes(again.take(1))] == [live]


def test_a_bucket_stream_resumes_across_its_lists(served):
    daemon, api, listen = served
    assert_status(api.put("/buckets/b/collections/d"), 201)
    stream = listen("/buckets/b")
    put(api, "first")
    (seen,) = stream.take(1)
    assert seen.id.endswith(f":{RECORDS}/first")
    stream.close()
    missed = []
    for n in range(25):
        missed.append(put(api, f"r{n}", n=n)["id"])
        response = api.put(f"/buckets/b/collections/d/records/d{n}", json={"data": {"n": n}})
        missed.append(assert_status(response, 201).json()["data"]["id"])
    assert_status(api.put("/buckets/b/groups/g", json={"data": {"members": ["x"]}}), 201)
    missed.append("g")
    again = listen("/buckets/b", last_event_id=seen.id)
    events = again.take(51)
    assert [data["id"] for _, _, data in changes(events)] == missed
    timestamps = [int(e.id.split(":")[0]) for e in events]
    assert timestamps == sorted(timestamps)
    again.nothing_more(0.5)


def test_since_replays_from_a_timestamp(served):
    daemon, api, listen = served
    first = put(api, "r1")
    second = put(api, "r2")
    stream = listen(params={"_since": str(first["last_modified"])})
    assert changes(stream.take(1)) == [("update", f"{RECORDS}/r2", second)]  # replayed: upsert
    stream.nothing_more(0.5)


def test_a_subscriber_only_gets_what_it_may_read_now(served):
    daemon, api, listen = served
    bob = listen(auth=BOB)
    put(api, "secret")
    bob.nothing_more()
    # Read on one record: that record's changes, not the others'.
    grant = {"data": {"title": "for bob"}, "permissions": {"read": [f"basicauth:{bob_id(api)}"]}}
    assert_status(api.put(f"{RECORDS}/shared", json=grant), 201)
    ((_, uri, data),) = changes(bob.take(1))
    assert (uri, data["title"]) == (f"{RECORDS}/shared", "for bob")
    put(api, "secret", title="still secret")
    bob.nothing_more()
    # Read on the collection, granted while the stream is open: everything from then on.
    read = {"permissions": {"read": [f"basicauth:{bob_id(api)}"]}}
    assert_status(api.patch(COLLECTION, json=read), 200)
    later = put(api, "secret", title="visible now")
    assert changes(bob.take(1)) == [("update", f"{RECORDS}/secret", later)]


def test_a_group_membership_granted_mid_stream_takes_effect(served):
    daemon, api, listen = served
    assert_status(api.put("/buckets/b/groups/readers", json={"data": {"members": []}}), 201)
    read = {"permissions": {"read": ["/buckets/b/groups/readers"]}}
    assert_status(api.patch(COLLECTION, json=read), 200)
    bob = listen(auth=BOB)
    put(api, "before")
    bob.nothing_more()
    members = {"data": {"members": [f"basicauth:{bob_id(api)}"]}}
    assert_status(api.put("/buckets/b/groups/readers", json=members), 200)
    after = put(api, "after")
    assert changes(bob.take(1)) == [("create", f"{RECORDS}/after", after)]


def bob_id(api):
    hello = requests.get(api.daemon.url + "/", auth=BOB, timeout=10).json()
    return hello["user"]["id"].split(":", 1)[1]


def test_a_subscriber_too_slow_to_keep_up_is_told_to_resync(served):
    daemon, api, listen = served
    host, port = daemon.url.split("//")[1].split("/")[0].split(":")
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, never read
    slow.connect((host, int(port)))
    request = f"GET /v1/events{COLLECTION} HTTP/1.1\r\nHost: {host}\r\n"
    authorization = requests.Request("GET", "http://x", auth=ALICE).prepare().headers
    request += f"Authorization: {authorization['Authorization']}\r\n\r\n"
    slow.sendall(request.encode())
    time.sleep(0.5)  # subscribed
    big = "x" * 60_000
    for n in range(120):  # about 7 MB of events: more than socket buffers and the stream's
        put(api, f"r{n}", payload=big)
    received = bytearray()
    slow.settimeout(10)
    while chunk := slow.recv(1 << 16):
        received += chunk
    slow.close()
    text = received.decode()
    assert text.startswith("HTTP/1.1 200 OK")
    last = text.rstrip("\n").rsplit("\n\n", 1)[-1]
    assert last.startswith("event: resync"), last[:200]
    assert len(received) < 120 * 60_000, "closed before it got everything"


def test_an_unknown_scope_or_position_is_refused(served):
    daemon, api, listen = served
    assert_status(api.get("/events/buckets/nope"), 404)
    assert_status(api.get("/events/buckets/b/collections/nope"), 404)
    refused = api.get(f"/events{COLLECTION}", headers={"Last-Event-ID": "not a position"})
    assert_status(refused, 400)
    assert refused.json()["errno"] == 107


def test_eventsource_s_way_to_authenticate(served):
    daemon, api, listen = served
    token = requests.Request("GET", "http://x", auth=ALICE).prepare().headers["Authorization"]
    stream = listen(auth=None, params={"_auth": token})
    created = put(api, "r1")
    assert changes(stream.take(1)) == [("create", f"{RECORDS}/r1", created)]
    anonymous = listen(auth=None)
    put(api, "r2")
    anonymous.nothing_more()


def test_many_idle_streams_hold_no_worker(served):
    daemon, api, listen = served
    streams = [listen() for _ in range(40)]  # far more than the daemon's worker threads
    assert_status(api.get("/"), 200)
    created = put(api, "r1")
    for stream in streams:
        assert changes(stream.take(1)) == [("create", f"{RECORDS}/r1", created)]


def test_streams_end_when_their_clients_go(served):
    daemon, api, listen = served

    def open_files():
        return len(os.listdir(f"/proc/{daemon.process.pid}/fd"))

    kept = listen()  # the sender thread runs (its epoll, its wake-up sockets) ...
    put(api, "r0")
    kept.take(1)  # ... and holds this stream
    before = open_files()
    streams = [listen() for _ in range(20)]
    wait_for(lambda: open_files() >= before + 20)
    for stream in streams:
        stream.close()
    wait_for(lambda: open_files() <= before)


def test_deleting_the_collection_ends_its_stream(served):
    daemon, api, listen = served
    stream, bucket = listen(), listen("/buckets/b")
    put(api, "r1")
    stream.take(1)
    deleted = assert_status(api.delete(COLLECTION), 200).json()["data"]
    (event,) = stream.take(1)
    assert changes([event]) == [("delete", COLLECTION, deleted)]
    assert stream.ended.wait(10), "the stream ends with its collection"
    assert [uri for _, uri, _ in changes(bucket.take(2))] == [f"{RECORDS}/r1", COLLECTION]
    assert not bucket.ended.is_set()
    assert_status(api.get(f"/events{COLLECTION}"), 404)


def test_an_idle_stream_gets_heartbeat_comments(start_server):
    daemon = start_server(push_heartbeat_seconds="1")
    api = Api(daemon)
    assert_status(api.put("/buckets/b"), 201)
    assert_status(api.put(COLLECTION), 201)
    response = requests.get(
        daemon.url + f"/events{COLLECTION}", auth=ALICE, stream=True, timeout=30
    )
    received = b""
    while received.count(b": heartbeat\n\n") < 2:  # the read times out after 30 s
        received += response.raw.read1(1024)
    assert received == b"retry: 3000\n\n" + b": heartbeat\n\n" * 2
    response.raw._fp.fp.raw._sock.shutdown(socket.SHUT_RDWR)
    response.close()


def test_past_the_streams_its_files_allow_a_stream_gets_503_and_requests_go_on(start_server):
    # A daemon allowed 400 open files holds 400 - SPARE_FILES streams; one
    # more would have made accept() fail for every request.
    limited = [
        sys.executable,
        "-c",
        "import resource, runpy, sys; "
        "resource.setrlimit(resource.RLIMIT_NOFILE, (400, 400)); "
        "sys.argv = ['kintofs', *sys.argv[1:]]; "
        "runpy.run_module('kintofs', run_name='__main__')",
    ]
    daemon = start_server(command=limited)
    api = Api(daemon)
    assert_status(api.put("/buckets/b"), 201)
    assert_status(api.put(COLLECTION), 201)
    allowed = 400 - SPARE_FILES
    held = [Listener(daemon, f"/events{COLLECTION}") for _ in range(allowed)]
    try:
        assert all(stream.response.status_code == 200 for stream in held)
        refused = api.get(f"/events{COLLECTION}")
        assert_status(refused, 503)
        assert refused.headers["Retry-After"] == "30"
        created = put(api, "r1")
        for stream in held[:: allowed // 4]:
            assert changes(stream.take(1)) == [("create", f"{RECORDS}/r1", created)]
    finally:
        for stream in held:
            stream.close()

    def a_stream_again():
        response = api.get(f"/events{COLLECTION}", stream=True)
        response.close()  # read by no thread: closes at once
        return response.status_code == 200

    wait_for(a_stream_again)  # once the sender has seen them go
