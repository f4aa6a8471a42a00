"""Slow, idle and half-sent requests never hold a worker (web/gate.py).

Each test talks raw sockets to a real daemon with four worker threads and
short deadlines, so that the attacks below would have owned every worker of
a server that reads requests in its workers, and other clients' requests
would have waited for minutes.  The guard timeouts are generous; nothing
here asserts a speed.
"""

import json
import socket
import threading
import time

import pytest
import requests
from conftest import ALICE, Daemon

HEADER_TIMEOUT = 3
BODY_TIMEOUT = 2
MIN_RATE = 200  # bytes per second, once BODY_TIMEOUT has passed
GUARD = 10  # seconds an honest request may take, at the very most


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    started = Daemon(
        tmp_path_factory.mktemp("slow") / "data",
        threads=4,
        request_header_timeout_seconds=HEADER_TIMEOUT,
        request_body_timeout_seconds=BODY_TIMEOUT,
        request_body_min_rate_bytes=MIN_RATE,
    )
    yield started
    started.stop()


def connect(daemon):
    sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=GUARD)
    return sock


def read_response(sock):
    """(status, headers, body) of one response read from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", 0))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:length], rest[length:]


def read_all(sock):
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return data
        if not chunk:
            return data
        data += chunk


def record_path():
    return "/v1/buckets/b/collections/c/records"


@pytest.fixture
def collection(daemon):
    session = requests.Session()
    session.auth = ALICE
    assert requests.post(daemon.url + "/__flush__", timeout=GUARD).status_code == 202
    assert session.put(daemon.url + "/buckets/b", timeout=GUARD).status_code == 201
    assert session.put(daemon.url + "/buckets/b/collections/c", timeout=GUARD).status_code == 201
    record = session.put(
        daemon.url + "/buckets/b/collections/c/records/r1",
        json={"data": {"title": "hello"}},
        timeout=GUARD,
    )
    assert record.status_code in (200, 201)
    return session


def auth_header():
    import base64

    return "Basic " + base64.b64encode(f"{ALICE[0]}:{ALICE[1]}".encode()).decode()


class Attackers:
    """Many connections trickling their requests, one byte group at a time."""

    def __init__(self, daemon):
        self.daemon = daemon
        self.sockets = {"header": [], "body": [], "chunked": []}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)

    def open(self, count):
        for _ in range(count):
            sock = connect(self.daemon)
            sock.sendall(b"GET /v1/ HTTP/1.1\r\nHost: x\r\n")  # the headers never end
            self.sockets["header"].append(sock)
            sock = connect(self.daemon)
            sock.sendall(
                f"PUT {record_path()}/slow HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: {auth_header()}\r\nContent-Type: application/json\r\n"
                "Content-Length: 100000\r\n\r\n{".encode()
            )
            self.sockets["body"].append(sock)
            sock = connect(self.daemon)
            sock.sendall(
                f"POST {record_path()} HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: {auth_header()}\r\nContent-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n".encode()
            )
            self.sockets["chunked"].append(sock)
        self._thread.start()

    def _trickle(self):
        while not self._stop.wait(0.5):
            for kind, pieces in (("header", b"X"), ("body", b" "), ("chunked", b"1\r\n \r\n")):
                for sock in self.sockets[kind]:
                    try:
                        sock.send(pieces)
                    except OSError:
                        pass

    def stop(self):
        self._stop.set()
        self._thread.join()

    def close(self):
        self.stop()
        for sockets in self.sockets.values():
            for sock in sockets:
                sock.close()


def open_files(daemon):
    import os

    return len(os.listdir(f"/proc/{daemon.process.pid}/fd"))


@pytest.mark.slow
def test_600_slow_connections_do_not_block_other_clients(daemon, collection):
    files_before = open_files(daemon)
    attackers = Attackers(daemon)
    try:
        attackers.open(200)  # 200 slow headers, 200 slow bodies, 200 endless chunked bodies
        time.sleep(0.5)
        other = requests.Session()
        started = time.monotonic()
        # While every one of the 600 is still within its deadline:
        while time.monotonic() - started < HEADER_TIMEOUT - 1:
            hello = other.get(daemon.url + "/", timeout=GUARD)
            assert hello.status_code == 200
            record = other.get(
                daemon.url + "/buckets/b/collections/c/records/r1", auth=ALICE, timeout=GUARD
            )
            assert record.status_code == 200 and record.json()["data"]["title"] == "hello"
        attackers.stop()
        # Past the deadlines each of them is answered 408 (Kinto JSON) and closed.
        for kind, sockets in attackers.sockets.items():
            for sock in sockets[:20]:
                sock.settimeout(GUARD + HEADER_TIMEOUT)
                status, headers, body, _ = read_response(sock)
                assert status == 408, (kind, body)
                assert headers["connection"] == "close"
                assert json.loads(body)["errno"] == 999
        # Nothing half-sent was stored.
        listing = collection.get(daemon.url + "/buckets/b/collections/c/records", timeout=GUARD)
        assert [r["id"] for r in listing.json()["data"]] == ["r1"]
    finally:
        attackers.close()
    # Every one of the 600 connections was closed: no descriptor leaked.
    deadline = time.monotonic() + GUARD
    while open_files(daemon) > files_before + 5 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert open_files(daemon) <= files_before + 5


def test_a_body_sent_at_the_minimum_rate_is_accepted(daemon, collection):
    body = json.dumps({"data": {"text": "x" * 1500}}).encode()
    sock = connect(daemon)
    sock.sendall(
        f"PUT {record_path()}/steady HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: {auth_header()}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    # 500 bytes a second for 3 s: past BODY_TIMEOUT, but above MIN_RATE.
    for start in range(0, len(body), 250):
        sock.sendall(body[start : start + 250])
        time.sleep(0.5)
    status, _, answer, _ = read_response(sock)
    assert status == 201, answer
    assert (
        collection.get(
            daemon.url + "/buckets/b/collections/c/records/steady", timeout=GUARD
        ).json()["data"]["text"]
        == "x" * 1500
    )


def test_an_idle_connection_is_closed_without_an_answer(daemon):
    sock = connect(daemon)
    sock.settimeout(HEADER_TIMEOUT + GUARD)
    assert read_all(sock) == b""


def test_request_line_over_8_KiB_is_414(daemon):
    response = requests.get(daemon.url + "/?" + "a" * 9000, timeout=GUARD)
    assert response.status_code == 414
    assert response.json() == {
        "code": 414,
        "errno": 113,
        "error": "Request-URI Too Long",
        "message": "The request line is longer than 8192 bytes.",
    }
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    # A line just under the cap is served.
    assert requests.get(daemon.url + "/?" + "a" * 8000, timeout=GUARD).status_code == 200


def test_a_huge_query_string_is_refused_at_once(daemon):
    sock = connect(daemon)
    try:
        sock.sendall(b"GET /v1/buckets?" + b"a" * 1_900_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused while still sending: the answer is already waiting
    status, _, body, _ = read_response(sock)
    assert status == 414
    assert json.loads(body)["errno"] == 113


def test_headers_over_64_KiB_are_431(daemon):
    headers = {f"X-Filler-{i}": "v" * 1000 for i in range(70)}
    response = requests.get(daemon.url + "/", headers=headers, timeout=GUARD)
    assert response.status_code == 431
    assert response.json()["error"] == "Request Header Fields Too Large"
    # 60 KiB of headers is fine.
    headers = {f"X-Filler-{i}": "v" * 1000 for i in range(60)}
    assert requests.get(daemon.url + "/", headers=headers, timeout=GUARD).status_code == 200


def test_pipelined_requests_are_answered_in_order(daemon, collection):
    body = json.dumps({"data": {"title": "piped"}}).encode()
    sock = connect(daemon)
    sock.sendall(
        b"GET /v1/ HTTP/1.1\r\nHost: x\r\n\r\n"
        + f"PUT {record_path()}/p1 HTTP/1.1\r\nHost: x\r\nAuthorization: {auth_header()}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
        + f"GET {record_path()}/p1 HTTP/1.1\r\nHost: x\r\nAuthorization: {auth_header()}\r\n"
        "\r\n".encode()
    )
    statuses, bodies, extra = [], [], b""
    for _ in range(3):
        status, _, answer, extra = read_response(_Prefixed(sock, extra))
        statuses.append(status)
        bodies.append(answer)
    assert statuses == [200, 201, 200]
    assert json.loads(bodies[2])["data"]["title"] == "piped"


class _Prefixed:
    """A socket whose first recv returns bytes already read."""

    def __init__(self, sock, prefix):
        self.sock, self.prefix = sock, prefix

    def recv(self, size):
        if self.prefix:
            data, self.prefix = self.prefix, b""
            return data
        return self.sock.recv(size)


def test_expect_100_continue_gets_one_interim_answer(daemon, collection):
    body = json.dumps({"data": {"title": "expected"}}).encode()
    sock = connect(daemon)
    sock.sendall(
        f"PUT {record_path()}/e1 HTTP/1.1\r\nHost: x\r\nAuthorization: {auth_header()}\r\n"
        "Content-Type: application/json\r\nExpect: 100-continue\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    interim = sock.recv(1024)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    sock.sendall(body)
    status, _, answer, extra = read_response(sock)
    assert status == 201, answer
    assert extra == b""


def test_chunked_body_with_a_trailer(daemon, collection):
    body = json.dumps({"data": {"title": "chunks"}}).encode()
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 5]), body[i : i + 5]) for i in range(0, len(body), 5)
    )
    sock = connect(daemon)
    sock.sendall(
        f"PUT {record_path()}/c1 HTTP/1.1\r\nHost: x\r\nAuthorization: {auth_header()}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + chunks
        + b"0\r\nX-Trailer: yes\r\n\r\n"
        + b"GET /v1/ HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    status, _, answer, extra = read_response(sock)
    assert status == 201, answer
    status, _, _, _ = read_response(_Prefixed(sock, extra))
    assert status == 200


@pytest.mark.parametrize(
    "framing, message",
    [
        (b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", "Bad chunked transfer size."),
        (b"Transfer-Encoding: chunked\r\n\r\n" + b"1" * 5000, "Chunk line too long."),
        (b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n", "Conflicting Content-Length headers."),
        (b"Content-Length: -5\r\n\r\n", "Malformed Content-Length header."),
        (b"Content-Length: 5\n\n", "HTTP requires CRLF line endings."),
        (b" folded: line\r\n\r\n", "Malformed header line."),
    ],
)
def test_bad_framing_is_a_json_400(daemon, framing, message):
    sock = connect(daemon)
    sock.sendall(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\n" + framing)
    status, headers, body, _ = read_response(sock)
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["message"] == message


def test_a_declared_oversize_body_is_refused_without_waiting_for_it(daemon):
    sock = connect(daemon)
    sock.sendall(
        b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 999999999\r\n\r\n{"
    )
    status, headers, body, _ = read_response(sock)
    assert status == 413
    assert json.loads(body)["errno"] == 113
    assert read_all(sock) == b""  # and closed: nobody waits for the rest


def test_an_oversize_chunked_body_is_refused(start_server):
    daemon = start_server(max_request_body_bytes=1000)
    sock = connect(daemon)
    sock.sendall(
        b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + b"200\r\n" + b" " * 512 + b"\r\n" + b"300\r\n"
    )
    status, _, body, _ = read_response(sock)
    assert status == 413
    assert json.loads(body)["errno"] == 113


def test_a_body_with_newlines_sent_with_its_head(daemon, collection):
    body = json.dumps({"data": {"title": "pretty\nprinted"}}, indent=2).encode()
    sock = connect(daemon)
    sock.sendall(
        f"PUT {record_path()}/nl HTTP/1.1\r\nHost: x\r\nAuthorization: {auth_header()}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    status, _, answer, _ = read_response(sock)
    assert status == 201, answer
    assert json.loads(answer)["data"]["title"] == "pretty\nprinted"


# -- the framing alone, in-process -------------------------------------------

REQUESTS = [
    b"GET /v1/ HTTP/1.1\r\nHost: x\r\n\r\n",
    b'\r\nPUT /v1/x HTTP/1.1\r\nContent-Length: 12\r\nExpect: 100-continue\r\n\r\n{\n  "a": 1\n}',
    b"POST /v1/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nT: 1\r\n\r\n",
    b"POST /v1/x HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\nok",
]


@pytest.mark.parametrize("request_bytes", REQUESTS)
def test_framing_is_the_same_however_the_bytes_are_cut(request_bytes):
    from kintofs.web.gate import Framing

    whole = Framing(1000)
    assert whole.feed(request_bytes + b"NEXT") == len(request_bytes)
    assert whole.complete
    bytewise = Framing(1000)
    for index in range(len(request_bytes)):
        assert not bytewise.complete
        assert bytewise.feed(request_bytes[index : index + 1]) == 1
    assert bytewise.complete
    assert bytewise.head == whole.head
    assert b"Expect" not in whole.head and b"\n\n" not in whole.head


def test_framing_cost_is_linear_in_a_head_cut_into_single_bytes():
    from kintofs.web.gate import Framing, Refused

    framing = Framing(1000)
    head = b"GET /v1/ HTTP/1.1\r\n" + b"X-A: " + b"a" * 70000
    with pytest.raises(Refused) as refused:
        for index in range(len(head)):
            framing.feed(head[index : index + 1])
    assert refused.value.status == 431
