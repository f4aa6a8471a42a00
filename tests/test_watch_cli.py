"""``kintofs watch URL`` against real daemons: one line per change, resuming
after a dropped connection or a restarted daemon without losing or repeating
a change, a clean exit on Ctrl-C, one-line errors.

The command runs as a subprocess (as a user runs it); its output is read by
threads while the test writes over HTTP.  A dropped connection is made with
:class:`Proxy`, a TCP forwarder the test can cut: while it is cut the
changes are written to the daemon directly, so that they can only reach the
command through its resume (``Last-Event-ID``).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from unittest import mock

import conftest
import pytest
import test_live_files
from conftest import ALICE, Api, assert_status

COLLECTION = "/buckets/b/collections/c"
RECORDS = COLLECTION + "/records"


def wait_for(check, timeout=15, what="the expected output"):
    return test_live_files.wait_for(check, timeout, what)


def environment():
    env = {k: v for k, v in os.environ.items() if not k.startswith("KINTOFS_")}
    return {**env, "PYTHONIOENCODING": "utf-8"}


def reset_sigint():
    # Ctrl-C must reach the command even where this test runs with SIGINT
    # ignored (a background job): Python then would not install its handler.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Watch:
    """``python -m kintofs watch ARGS``, its stdout and stderr lines collected as they come."""

    def __init__(self, *args):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kintofs", "watch", *map(str, args)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            encoding="utf-8",
            env=environment(),
            preexec_fn=reset_sigint,
        )
        self.out, self.err = [], []
        self._readers = [
            threading.Thread(target=self._collect, args=(stream, into), daemon=True)
            for stream, into in ((self.process.stdout, self.out), (self.process.stderr, self.err))
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _collect(stream, into):
        for line in stream:
            into.append(line.rstrip("\n"))

    def wait_lines(self, count, timeout=15):
        """The first ``count`` stdout lines, once there are that many."""
        wait_for(
            lambda: len(self.out) >= count or self.process.poll() is not None,
            timeout,
            f"{count} lines (have {self.out}, stderr {self.err})",
        )
        assert len(self.out) >= count, f"exited {self.process.returncode}: {self.err}"
        return self.out[:count]

    def interrupt(self):
        """Ctrl-C; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(10)
        finally:
            self.kill()
        for reader in self._readers:
            reader.join(5)
        return code

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def watch():
    started = []

    def start(*args):
        started.append(Watch(*args))
        return started[-1]

    yield start
    for command in started:
        command.kill()


class Proxy:
    """Forwards TCP connections from its own port to ``target_port``.

    ``cut()`` drops every connection, and until ``restore()`` closes each
    new one at once (the client sees the server hang up before answering).
    ``requests`` has the head of every request forwarded.
    """

    def __init__(self, target_port):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.requests = []
        self.refused = 0  # connections closed at once while cut
        self._open = True
        self._pairs = []
        self._guard = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while not self._stopped:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._open:
                self.refused += 1
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._guard:
                self._pairs.append((client, upstream))
            head = bytearray()
            threading.Thread(target=self._pump, args=(client, upstream, head), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()

    def _pump(self, source, sink, head):
        try:
            while data := source.recv(65536):
                if head is not None and b"\r\n\r\n" not in head:
                    head += data
                    if b"\r\n\r\n" in head:
                        self.requests.append(head.decode("latin-1").split("\r\n\r\n")[0])
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self):
        self._open = False
        with self._guard:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def restore(self):
        self._open = True

    def close(self):
        self._stopped = True
        self.cut()
        self.listener.close()
        self._thread.join(5)


@pytest.fixture
def proxy():
    started = []

    def start(target_port):
        started.append(Proxy(target_port))
        return started[-1]

    yield start
    for forwarder in started:
        forwarder.close()


def setup_collection(daemon):
    api = Api(daemon, ALICE)
    assert_status(api.put("/buckets/b"), 201)
    assert_status(api.put(COLLECTION), 201)
    return api


def stamp(response):
    return response.json()["data"]["last_modified"]


def user_option(auth=ALICE):
    return f"{auth[0]}:{auth[1]}"


# ---------------------------------------------------------------------------
# Printing
# ---------------------------------------------------------------------------


def subscribed(command, api):
    """Wait until ``command`` (started with ``--since``) streams live: a probe
    record written now comes either live or in the replay of what followed
    ``--since``; once it is printed, whatever comes next is live.  (Replayed
    from the list's changes, a creation says "update": they do not keep
    which it was, see test_resumes_after_a_dropped_connection.)"""
    count = len(command.out)
    probe = stamp(assert_status(api.put(RECORDS + "/probe", json={"data": {}}), 201))
    line = command.wait_lines(count + 1)[-1]
    assert str(probe) in line and RECORDS + "/probe" in line, line


def test_one_line_per_change_then_ctrl_c(start_server, watch):
    daemon = start_server()
    api = setup_collection(daemon)
    start = stamp(api.get(COLLECTION))
    command = watch(daemon.url + "/events" + COLLECTION, "--user", user_option(), "--since", start)
    subscribed(command, api)

    created = stamp(assert_status(api.put(RECORDS + "/r1", json={"data": {"n": 1}}), 201))
    command.wait_lines(2)  # (two changes of one object read at once would be one event)
    updated = stamp(assert_status(api.patch(RECORDS + "/r1", json={"data": {"n": 2}}), 200))
    command.wait_lines(3)
    deleted = stamp(assert_status(api.delete(RECORDS + "/r1"), 200))

    assert command.wait_lines(4)[1:] == [
        f"{created} create {RECORDS}/r1",
        f"{updated} update {RECORDS}/r1",
        f"{deleted} delete {RECORDS}/r1",
    ]
    assert command.interrupt() == 130
    assert command.err == []  # no traceback, no note: nothing went wrong


def test_json_prints_each_event_as_sent(start_server, watch):
    daemon = start_server()
    api = setup_collection(daemon)
    start = stamp(api.get(COLLECTION))
    # A bucket's stream: positions are <timestamp>:<uri>.
    command = watch(
        daemon.url + "/events/buckets/b", "--json", "--user", user_option(), "--since", start
    )
    subscribed(command, api)
    record = assert_status(api.put(RECORDS + "/r1", json={"data": {"title": "été"}}), 201).json()
    line = command.wait_lines(2)[1]
    assert json.loads(line) == {
        "action": "create",
        "uri": f"{RECORDS}/r1",
        "resource_name": "record",
        "data": record["data"],
        "timestamp": record["data"]["last_modified"],
    }
    assert "été" in line  # as UTF-8, not \\u escapes
    assert command.interrupt() == 130


def test_only_what_the_user_may_read(start_server, watch):
    daemon = start_server()
    api = setup_collection(daemon)
    start = stamp(api.get(COLLECTION))
    alice = watch(daemon.url + "/events", "--user", user_option(), "--since", start)
    bob = watch(daemon.url + "/events", "--user", "bob:bob-pw", "--since", start)
    created = stamp(assert_status(api.put(RECORDS + "/r1", json={"data": {}}), 201))
    [line] = alice.wait_lines(1)
    assert line.split(" ")[0::2] == [f"{created}:{RECORDS}/r1", f"{RECORDS}/r1"]
    # Bob's own bucket, made after r1: both come to his stream (live or from
    # --since) in their order, if he may read them.
    own = stamp(assert_status(Api(daemon, conftest.BOB).put("/buckets/bobs"), 201))
    [line] = bob.wait_lines(1)
    assert line.split(" ")[0::2] == [f"{own}:/buckets/bobs", "/buckets/bobs"]
    time.sleep(0.5)
    assert len(bob.out) == 1, bob.out
    assert alice.interrupt() == 130 and bob.interrupt() == 130


# ---------------------------------------------------------------------------
# Resuming
# ---------------------------------------------------------------------------


def test_resumes_after_a_dropped_connection_with_each_change_once(start_server, watch, proxy):
    daemon = start_server()
    api = setup_collection(daemon)
    start = stamp(assert_status(api.put(RECORDS + "/gone", json={"data": {}}), 201))
    through = proxy(daemon.port)
    url = f"http://127.0.0.1:{through.port}/v1/events{COLLECTION}"
    command = watch(url, "--user", user_option(), "--since", start)
    subscribed(command, api)

    first = stamp(assert_status(api.put(RECORDS + "/r1", json={"data": {"n": 1}}), 201))
    assert command.wait_lines(2)[1] == f"{first} create {RECORDS}/r1"

    through.cut()
    wait_for(lambda: through.refused, what="the command trying to reconnect")
    # Made while the command cannot see the daemon: only a resume brings them.
    meanwhile = [
        (api.patch(RECORDS + "/r1", json={"data": {"n": 2}}), 200, "update", "r1"),
        (api.put(RECORDS + "/r2", json={"data": {}}), 201, "create", "r2"),
        (api.delete(RECORDS + "/gone"), 200, "delete", "gone"),
    ]
    meanwhile = [
        (stamp(assert_status(response, status)), action, rid)
        for response, status, action, rid in meanwhile
    ]
    through.restore()
    command.wait_lines(5)
    live = stamp(assert_status(api.put(RECORDS + "/r3", json={"data": {}}), 201))
    lines = command.wait_lines(6)

    # Replayed from the collection's changes, which do not keep whether a
    # change was a creation: r2's creation comes back as "update".
    assert [line.split(" ") for line in lines[2:5]] == [
        [str(ts), "update" if action == "create" else action, f"{RECORDS}/{rid}"]
        for ts, action, rid in meanwhile
    ]
    assert lines[5] == f"{live} create {RECORDS}/r3"
    time.sleep(0.5)
    assert len(command.out) == 6, command.out  # nothing twice

    # The reconnection said where it had got to, and no longer asked for --since.
    resumed = [head for head in through.requests if f"last-event-id: {first}" in head.lower()]
    assert resumed, through.requests
    assert "_since" not in resumed[-1].split("\r\n")[0]
    assert any("reconnecting in" in note and f"after {first}" in note for note in command.err)
    assert "kintofs watch: reconnected" in command.err
    assert command.interrupt() == 130


@contextmanager
def fixed_port(port):
    """conftest's Daemon listens on a free port of its choosing: make it ``port``."""
    with mock.patch.dict(conftest.Daemon.__init__.__globals__, free_port=lambda: port):
        yield


def test_resumes_after_the_daemon_restarts_on_the_same_port(tmp_path, watch):
    data_dir = tmp_path / "data"
    daemon = conftest.Daemon(data_dir)
    daemons = [daemon]
    try:
        api = setup_collection(daemon)
        start = stamp(api.get(COLLECTION))
        command = watch(daemon.url + "/events/buckets/b", "--user", user_option(), "--since", start)
        subscribed(command, api)
        before = stamp(assert_status(api.put(RECORDS + "/r1", json={"data": {}}), 201))
        assert command.wait_lines(2)[1] == f"{before}:{RECORDS}/r1 create {RECORDS}/r1"

        daemon.stop()
        wait_for(lambda: command.err, what="a note that the connection was lost")
        with fixed_port(daemon.port):
            daemon = conftest.Daemon(data_dir)
        daemons.append(daemon)
        api = Api(daemon, ALICE)
        # Whether the command is back already or not: each change once.
        after = [
            stamp(assert_status(api.patch(RECORDS + "/r1", json={"data": {"n": 2}}), 200)),
            stamp(assert_status(api.put(RECORDS + "/r2", json={"data": {}}), 201)),
        ]
        lines = command.wait_lines(4, timeout=30)[1:]
        assert [line.split(" ")[0] for line in lines] == [
            f"{before}:{RECORDS}/r1",
            f"{after[0]}:{RECORDS}/r1",
            f"{after[1]}:{RECORDS}/r2",
        ]
        assert lines[1].split(" ")[1:] == ["update", f"{RECORDS}/r1"]
        time.sleep(1.5)  # a poll of the hub: nothing more comes
        assert len(command.out) == 4, command.out
        assert "kintofs watch: reconnected" in command.err
        assert command.interrupt() == 130
    finally:
        for started in daemons:
            started.stop()


# ---------------------------------------------------------------------------
# Errors: one line, at once
# ---------------------------------------------------------------------------


def run_watch(*args):
    return subprocess.run(
        [sys.executable, "-m", "kintofs", "watch", *map(str, args)],
        capture_output=True,
        encoding="utf-8",
        timeout=30,
        env=environment(),
        stdin=subprocess.DEVNULL,
    )


def test_errors_are_one_line(start_server):
    daemon = start_server()
    setup_collection(daemon)
    cases = [
        (daemon.url + "/events/buckets/nope", 1, "404 Not Found"),
        (daemon.url + "/buckets/b", 1, "streams are under /v1/events"),
        (f"http://127.0.0.1:{conftest.free_port()}/v1/events", 1, "cannot connect to"),
        ("ftp://127.0.0.1/v1/events", 2, "not an http:// or https:// URL"),
        (daemon.url + "/events?_since=yesterday", 1, "400"),
    ]
    for url, status, message in cases:
        result = run_watch(url, "--user", user_option())
        assert result.returncode == status, (url, result.stderr)
        assert result.stdout == ""
        [line] = result.stderr.splitlines()
        assert line.startswith("kintofs watch: ") and message in line, (url, line)


def test_parse_events_follows_the_event_stream_rules():
    from kintofs.watch_cli import parse_events

    stream = [
        b"\xef\xbb\xbfretry: 3000\n",
        b"\n",
        b": heartbeat\r\n",
        b"\r\n",
        b"id: 1\n",
        b"event: create\n",
        b'data: {"a":\n',
        b"data:1}\n",
        b"\n",
        b"data: no id, no name\n",
        b"\n",
        b"id\n",
        b"event: update\n",
        b"data\n",
        b"\n",
    ]
    assert list(parse_events(stream)) == [
        ("1", "create", '{"a":\n1}'),
        ("1", "message", "no id, no name"),
        (None, "update", ""),
    ]
