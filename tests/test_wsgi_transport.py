"""The in-process transport (wsgi_transport.py) hands an app what cheroot hands it.

A small echo app runs under a real cheroot server on a socket and through
the transport; the environ and response each side sees must agree, so the
in-process HTTP tests test what the daemon would serve.
"""

import json
import threading

import pytest
import requests
from cheroot import wsgi
from conftest import ALICE
from wsgi_transport import wsgi_session

# Differ by nature: the peer's port, the server's port, the stream objects.
UNCOMPARED = {"REMOTE_PORT", "SERVER_PORT", "HTTP_HOST", "wsgi.input", "wsgi.errors"}


def echo(environ, start_response):
    """Answer with the environ (strings only) and the body it read."""
    length = environ.get("CONTENT_LENGTH")
    if length:
        body = environ["wsgi.input"].read(int(length))
    elif "chunked" in environ.get("HTTP_TRANSFER_ENCODING", ""):
        body = environ["wsgi.input"].read()
    else:
        body = b""
    seen = {
        key: value
        for key, value in environ.items()
        if key not in UNCOMPARED and isinstance(value, (str, bool, tuple))
    }
    content = json.dumps({"environ": seen, "body": body.decode("latin-1")}).encode()
    status = environ.get("HTTP_X_STATUS", "200 OK")
    start_response(status, [("Content-Type", "application/json"), ("X-Echo", "yes")])
    return [content]


@pytest.fixture(scope="module")
def cheroot_url():
    server = wsgi.Server(("127.0.0.1", 0), echo, numthreads=2)
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.bind_addr[1]}"
    server.stop()
    thread.join(5)


IN_PROCESS = "http://kintofs.test"


def both(cheroot_url, method, path, **kwargs):
    """(over a socket, in process) responses to one request; a callable
    ``data`` is called for each (a generator body can be sent once)."""
    responses = []
    for session, base in (
        (requests.Session(), cheroot_url),
        (wsgi_session(echo, IN_PROCESS), IN_PROCESS),
    ):
        sent = dict(kwargs, data=kwargs["data"]()) if callable(kwargs.get("data")) else kwargs
        responses.append(
            session.request(method, base + path, timeout=10, allow_redirects=False, **sent)
        )
    return responses


def chunks():
    """A body requests sends with Transfer-Encoding: chunked."""
    yield b'{"data": '
    yield b'{"a": 1}}'


@pytest.mark.parametrize(
    "method, path, kwargs",
    [
        ("GET", "/v1/buckets", {}),
        ("GET", "/v1/buckets/b?_sort=-x&like_t=%2Aa%20b&x=%C3%A9", {}),
        ("GET", "/v1/a%2Fb/%2e%2e/%62atch/%C3%A9%20x/%2f", {}),
        ("GET", "/v1//buckets/", {"headers": {"Origin": "http://example.com", "X_Under": "1"}}),
        ("HEAD", "/v1/", {"auth": ALICE}),
        ("DELETE", "/v1/buckets", {"auth": ALICE}),
        ("PUT", "/v1/buckets/b", {"json": {"data": {"t": "é"}}, "auth": ALICE}),
        ("PATCH", "/v1/b", {"data": "x=1", "headers": {"Content-Type": "text/plain"}}),
        ("POST", "/v1/batch", {"data": b"\x00\xff"}),
        ("POST", "/v1/records", {"files": {"attachment": ("a.txt", b"hello", "text/plain")}}),
        ("PUT", "/v1/chunked", {"data": chunks, "headers": {"Content-Type": "application/json"}}),
        ("OPTIONS", "/v1/buckets", {"headers": {"Access-Control-Request-Method": "GET"}}),
    ],
)
def test_the_app_sees_what_cheroot_gives_it(cheroot_url, method, path, kwargs):
    real, local = both(cheroot_url, method, path, **kwargs)
    assert local.status_code == real.status_code
    if method == "HEAD":
        assert local.content == real.content == b""
        return
    seen_real, seen_local = real.json(), local.json()
    if "files" in kwargs:  # the multipart boundary is random
        for seen in (seen_real, seen_local):
            boundary = seen["environ"]["CONTENT_TYPE"].split("boundary=")[1]
            seen["body"] = seen["body"].replace(boundary, "B")
            seen["environ"]["CONTENT_TYPE"] = "multipart/form-data; boundary=B"
    assert seen_local == seen_real


def test_response_headers_and_statuses(cheroot_url):
    for status in ("200 OK", "201 Created", "304 Not Modified", "404 Not Found", "500 Oops"):
        real, local = both(cheroot_url, "GET", "/", headers={"X-Status": status})
        assert (local.status_code, local.reason) == (real.status_code, real.reason)
        assert local.headers["X-Echo"] == real.headers["X-Echo"] == "yes"
        assert local.headers["Server"] == real.headers["Server"]
        assert "Date" in local.headers
        if status.startswith("304"):
            assert local.content == real.content == b""


def test_a_request_that_hangs_times_out():
    release = threading.Event()

    def stuck(environ, start_response):
        release.wait(10)
        start_response("200 OK", [])
        return [b""]

    with pytest.raises(requests.ReadTimeout):
        wsgi_session(stuck, IN_PROCESS).get(IN_PROCESS + "/", timeout=0.2)
    release.set()


def test_an_app_that_raises_is_a_bare_500_as_with_cheroot():
    def broken(environ, start_response):
        raise RuntimeError("bug")

    response = wsgi_session(broken, IN_PROCESS).get(IN_PROCESS + "/", timeout=10)
    assert response.status_code == 500


def test_other_hosts_are_not_sent_to_the_app():
    session = wsgi_session(echo, IN_PROCESS)
    with pytest.raises(requests.ConnectionError):
        session.get("http://kintofs-elsewhere.test/", timeout=5)
