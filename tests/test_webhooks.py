"""Webhooks (kintofs/push/webhooks.py): every change POSTed once, in order, signed.

A real receiver (http.server on 127.0.0.1, in a thread) that answers 503 or
has its port closed for a while: it still gets every change exactly once
(by id), in order, with a signature that checks out; a bucket or collection
filter keeps the others out; a restart of the daemon while the receiver is
down loses nothing; a hook that falls behind catches up from the data.
"""

import hashlib
import hmac
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import free_port

from kintofs.config import ConfigError, load_settings
from kintofs.fsstore import layout
from kintofs.push.webhooks import Webhooks, hook_key, sign

SECRET = "webhook-secret"


class Receiver:
    """An HTTP receiver of webhooks: answers ``status`` to every POST, or is
    closed (no one listens on its port).  ``received`` holds what it answered
    2xx to, ``attempts`` every POST it saw."""

    def __init__(self, secret=SECRET):
        self.secret = secret
        self.port = free_port()
        self.status = 200
        self.received = []  # {"path", "id", "body", "verified", "headers"}
        self.attempts = 0
        self.guard = threading.Lock()
        self.server = None

    def url(self, path="/hook"):
        return f"http://127.0.0.1:{self.port}{path}"

    def open(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.guard:
                    receiver.attempts += 1
                    status = receiver.status
                    if 200 <= status < 300:
                        receiver.received.append(receiver.entry(self, body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def close(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def entry(self, handler, body):
        timestamp = handler.headers["X-Kintofs-Timestamp"]
        expected = hmac.new(
            self.secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256
        ).hexdigest()
        signature = handler.headers["X-Kintofs-Signature"]
        document = json.loads(body)
        return {
            "path": handler.path,
            "id": document["id"],
            "body": document,
            "verified": hmac.compare_digest(signature, "sha256=" + expected)
            and abs(time.time() - int(timestamp)) < 300,
            "headers": dict(handler.headers),
        }

    def ids(self, path="/hook"):
        with self.guard:
            return [entry["id"] for entry in self.received if entry["path"] == path]

    def wait_for(self, count, path="/hook", timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.ids(path)) >= count:
                return self.ids(path)
            time.sleep(0.05)
        raise AssertionError(f"{path}: {len(self.ids(path))} of {count} changes: {self.ids(path)}")

    def wait_for_attempts(self, count, timeout=10):
        deadline = time.monotonic() + timeout
        while self.attempts < count:
            assert time.monotonic() < deadline, f"only {self.attempts} attempts"
            time.sleep(0.02)


@pytest.fixture
def receiver():
    receiver = Receiver().open()
    yield receiver
    receiver.close()


def hooks_setting(*hooks):
    return json.dumps([{"secret": SECRET, **hook} for hook in hooks])


class Writer:
    """Writes over HTTP and remembers the position of each change made."""

    def __init__(self, daemon):
        self.positions = []
        self.use(daemon)

    def use(self, daemon):
        from conftest import ALICE, Api

        self.api = Api(daemon, ALICE)

    def put(self, path, data=None):
        response = self.api.put(path, json={"data": data or {}})
        assert response.status_code in (200, 201), response.text
        return self._made(path, response.json()["data"])

    def post(self, path, data):
        response = self.api.post(path, json={"data": data})
        assert response.status_code == 201, response.text
        return self._made(f"{path}/{response.json()['data']['id']}", response.json()["data"])

    def delete(self, path):
        response = self.api.delete(path)
        assert response.status_code == 200, response.text
        return self._made(path, response.json()["data"])

    def _made(self, path, data):
        uri = path.removeprefix("/v1")
        self.positions.append((data["last_modified"], uri))
        return data

    def ids(self, prefix="", single_list=False):
        """The ids a hook following ``prefix`` gets, in order."""
        found = sorted(p for p in self.positions if p[1].startswith(prefix))
        return [str(ts) if single_list else f"{ts}:{uri}" for ts, uri in found]


def test_every_change_once_in_order_signed_across_receiver_outages(start_server, receiver):
    daemon = start_server(webhooks=hooks_setting({"url": receiver.url()}))
    writer = Writer(daemon)
    writer.put("/buckets/blog")
    writer.put("/buckets/blog/collections/posts")
    records = [writer.post("/buckets/blog/collections/posts/records", {"n": n}) for n in range(3)]
    assert receiver.wait_for(5) == writer.ids()

    # Down, answering 503: the changes wait, in order, and are retried.  (Each
    # change is of another object: two changes of one object that the hub
    # reads at once are one event, as with _since.)
    receiver.status = 503
    attempts = receiver.attempts
    writer.post("/buckets/blog/collections/posts/records", {"n": 3})
    writer.put(f"/buckets/blog/collections/posts/records/{records[0]['id']}", {"n": 33})
    writer.delete(f"/buckets/blog/collections/posts/records/{records[1]['id']}")
    receiver.wait_for_attempts(attempts + 2)  # the first try and a retry after 1 s
    receiver.status = 200
    assert receiver.wait_for(8) == writer.ids()

    # Down, its port closed (connection refused).
    receiver.close()
    writer.put("/buckets/blog/collections/drafts")
    writer.post("/buckets/blog/collections/drafts/records", {"n": 4})
    time.sleep(1.5)
    receiver.open()
    ids = receiver.wait_for(10)
    time.sleep(0.5)  # nothing more comes
    assert receiver.ids() == ids == writer.ids()
    assert len(set(ids)) == len(ids)

    entries = receiver.received
    assert all(entry["verified"] for entry in entries)
    assert [entry["body"]["action"] for entry in entries[:8]] == ["create"] * 6 + [
        "update",
        "delete",
    ]
    last = entries[-1]
    assert last["headers"]["X-Kintofs-Id"] == last["id"]
    assert last["headers"]["Content-Type"] == "application/json"
    assert last["headers"]["User-Agent"].startswith("kintofs/")
    assert last["body"]["uri"] == writer.positions[-1][1]
    assert last["body"]["resource_name"] == "record"
    assert last["body"]["data"]["n"] == 4
    assert last["body"]["timestamp"] == writer.positions[-1][0]
    assert entries[7]["body"]["data"]["deleted"] is True

    # The position of the last delivered change is on disk.
    hook = {"url": receiver.url(), "bucket": None, "collection": None}
    with open(layout.webhook_state_path(daemon.data_dir, hook_key(hook))) as f:
        assert json.load(f)["position"] == ids[-1]
    logs = daemon.logs()
    assert "not delivered (HTTP 503)" in logs and "Connection refused" in logs
    assert SECRET not in logs


def test_bucket_and_collection_filters(start_server, receiver):
    daemon = start_server(
        webhooks=hooks_setting(
            {"url": receiver.url("/blog"), "bucket": "blog"},
            {"url": receiver.url("/posts"), "bucket": "blog", "collection": "posts"},
        )
    )
    writer = Writer(daemon)
    writer.put("/buckets/blog")
    writer.put("/buckets/other")
    writer.put("/buckets/blog/collections/posts")
    writer.put("/buckets/blog/collections/drafts")
    writer.put("/buckets/other/collections/posts")
    writer.post("/buckets/blog/collections/posts/records", {"n": 1})
    writer.post("/buckets/blog/collections/drafts/records", {"n": 2})
    writer.post("/buckets/other/collections/posts/records", {"n": 3})
    writer.post("/buckets/blog/collections/posts/records", {"n": 4})

    # The bucket's own change (its creation) is a change of the root's list:
    # not in the bucket's scope, which is its groups, collections and records.
    in_blog = writer.ids("/buckets/blog/")
    in_posts = writer.ids("/buckets/blog/collections/posts/records/", single_list=True)
    assert len(in_blog) == 5 and len(in_posts) == 2
    assert receiver.wait_for(len(in_blog), "/blog") == in_blog
    assert receiver.wait_for(len(in_posts), "/posts") == in_posts
    time.sleep(1)
    assert receiver.ids("/blog") == in_blog and receiver.ids("/posts") == in_posts
    assert all(entry["verified"] for entry in receiver.received)


def test_a_restart_while_the_receiver_is_down_loses_nothing(start_server, receiver):
    setting = hooks_setting({"url": receiver.url()})
    daemon = start_server(webhooks=setting)
    writer = Writer(daemon)
    writer.put("/buckets/blog")
    assert receiver.wait_for(1) == writer.ids()

    receiver.close()
    writer.put("/buckets/blog/collections/posts")
    writer.post("/buckets/blog/collections/posts/records", {"n": 1})
    daemon.stop()
    assert "kintofs stopped" in daemon.logs()

    daemon = start_server(data_dir=daemon.data_dir, webhooks=setting)
    writer.use(daemon)
    writer.post("/buckets/blog/collections/posts/records", {"n": 2})
    writer.put("/buckets/blog/collections/more")
    receiver.open()
    ids = receiver.wait_for(5)
    time.sleep(0.5)
    assert receiver.ids() == ids == writer.ids()
    assert all(entry["verified"] for entry in receiver.received)


def test_a_hook_that_falls_behind_catches_up_from_the_data(start_app, receiver):
    """More changes than the queue holds while the receiver is down: the hub
    drops the hook, which delivers what it held, then replays the rest."""
    app = start_app()
    hook = {"url": receiver.url(), "secret": SECRET, "bucket": None, "collection": None}
    webhooks = Webhooks(
        app.service.push.hub, [hook], app.store.root, fsync=False, queue_events=3, first_retry=0.05
    )
    receiver.status = 503
    webhooks.start()
    try:
        writer = Writer(app)
        writer.put("/buckets/blog")
        writer.put("/buckets/blog/collections/posts")
        for n in range(10):
            writer.post("/buckets/blog/collections/posts/records", {"n": n})
        receiver.wait_for_attempts(2)
        receiver.status = 200
        ids = receiver.wait_for(12)
        time.sleep(0.3)
        assert receiver.ids() == ids == writer.ids()
    finally:
        webhooks.stop()
    assert all(entry["verified"] for entry in receiver.received)


def test_a_second_process_waits_for_the_first_ones_lock(tmp_path, receiver, monkeypatch):
    """Two daemons on one data directory: only the lock holder delivers."""
    from kintofs.push import webhooks

    monkeypatch.setattr(webhooks, "LOCK_RETRY_SECONDS", 0.05)

    class FakeHub:
        def __init__(self):
            self.subscribed = []

        def subscribe(self, subscriber, position=None):
            self.subscribed.append(subscriber)
            return True

        def unsubscribe(self, subscriber):
            subscriber.close()

    root = str(tmp_path)
    hook = {"url": receiver.url(), "secret": SECRET, "bucket": None, "collection": None}
    first_hub, second_hub = FakeHub(), FakeHub()
    first = Webhooks(first_hub, [hook], root, fsync=False).start()
    wait_until(lambda: first_hub.subscribed)
    second = Webhooks(second_hub, [hook], root, fsync=False).start()
    time.sleep(0.3)
    assert not second_hub.subscribed  # waiting for the lock
    first.stop()
    wait_until(lambda: second_hub.subscribed)  # it delivers now
    second.stop()
    assert os.path.exists(layout.webhooks_lock_path(root))


def wait_until(condition, timeout=5):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_signature_scheme():
    body = b'{"id":"1:/buckets/b"}'
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("k", 1700000000, body) == "sha256=" + expected


@pytest.mark.parametrize(
    "hooks, problem",
    [
        ('{"url": "http://a"}', "expected an array of tables"),
        ('[{"url": "http://a"}]', "webhooks[0]: secret is missing"),
        ('[{"url": "ftp://a", "secret": "s"}]', "url must be an http:// or https:// URL"),
        ('[{"url": "http://a", "secret": ""}]', "secret must not be empty"),
        ('[{"url": "http://a", "secret": 5}]', "secret: expected a string, got int"),
        ('[{"url": "http://a", "secret": "s", "colection": "c"}]', "unknown field 'colection'"),
        ('[{"url": "http://a", "secret": "s", "collection": "c"}]', "needs its bucket"),
        ('[{"url": "http://a", "secret": "s", "bucket": "a/b"}]', "not a valid bucket id"),
        ('[{"url": "http://a", "secret": "s"}, {"url": "http://a", "secret": "t"}]', "same url"),
        ("http://a", "expected a JSON array of objects"),
    ],
)
def test_bad_webhooks_are_refused_with_a_clear_message(hooks, problem):
    with pytest.raises(ConfigError) as raised:
        load_settings(os.devnull, environ={"KINTOFS_WEBHOOKS": hooks})
    assert problem in str(raised.value)
    assert "KINTOFS_WEBHOOKS" in str(raised.value)


def test_webhooks_as_toml_tables(tmp_path):
    config = tmp_path / "kintofs.toml"
    config.write_text(
        'port = 9000\n\n[[webhooks]]\nurl = "https://a.example/h"\nsecret = "s"\n\n'
        '[[webhooks]]\nurl = "http://127.0.0.1:9/h"\nsecret = "t"\nbucket = "b"\n'
        'collection = "c"\n'
    )
    settings = load_settings(config, environ={})
    assert settings["webhooks"] == [
        {"url": "https://a.example/h", "secret": "s", "bucket": None, "collection": None},
        {"url": "http://127.0.0.1:9/h", "secret": "t", "bucket": "b", "collection": "c"},
    ]
    config.write_text('[[webhooks]]\nurl = "https://a.example/h"\nsecret = "s"\nport = 9000\n')
    with pytest.raises(ConfigError, match=r"unknown field 'port'.*at the end of the file"):
        load_settings(config, environ={})
