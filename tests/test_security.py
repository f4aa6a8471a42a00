"""Security defaults: where the daemon listens, what its answers and logs
never show, who may read its files, CORS, and the failed-login limit."""

import base64
import os
import socket
import stat
import subprocess
import sys
import time

import pytest
import requests
from conftest import (
    ALICE,
    SECRET,
    Api,
    assert_error,
    assert_status,
    basic_auth,
    free_port,
    wait_until_listening,
)
from wsgi_transport import wsgi_session

from kintofs.config import DEFAULTS, load_settings
from kintofs.server import build_app
from kintofs.web.ratelimit import LoginRateLimiter

CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
RECORDS = "/buckets/b/collections/c/records"


def stop_now(daemon):
    daemon.process.kill()
    daemon.process.wait()


# -- where it listens ---------------------------------------------------------


def test_listens_on_loopback_only_by_default(server):
    """The test daemons set no bind address: the default must keep other hosts out."""
    assert DEFAULTS["bind"] == "127.0.0.1"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5):
        pass
    # 127.0.0.2 is this machine too, but not the address the daemon bound.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", server.port), timeout=5).close()


# -- what answers never show ----------------------------------------------------

INTERNAL_ERROR = {
    "code": 500,
    "errno": 999,
    "error": "Internal Server Error",
    "message": "A programmatic error occurred, developers have been informed.",
    "info": "https://github.com/Kinto/kinto/issues/",
}


def test_an_internal_error_shows_no_trace_and_no_path(start_server):
    daemon = start_server()
    api = Api(daemon)
    assert_status(api.put("/buckets/b"), 201)
    assert_status(api.put("/buckets/b/collections/c"), 201)
    assert_status(api.put(f"{RECORDS}/r1", json={"data": {"n": 1}}), 201)
    # Something the code never expects: a folder where the record's file is.
    path = os.path.join(daemon.data_dir, "buckets/b/collections/c/records/r1.json")
    os.unlink(path)
    os.mkdir(path)

    response = api.put(f"{RECORDS}/r1", json={"data": {"n": 2}})
    assert_status(response, 500)
    assert response.json() == INTERNAL_ERROR
    assert response.headers["Content-Security-Policy"] == CSP
    for leak in ("Traceback", "IsADirectory", "Errno", daemon.data_dir, "/tmp", ".py", "r1.json"):
        assert leak not in response.text
    # The operator, not the client, gets the details.
    assert "IsADirectoryError" in daemon.logs()
    stop_now(daemon)


def test_security_headers_on_every_status(start_app):
    daemon = start_app(max_request_body_bytes=1000)
    api = Api(daemon)
    assert_status(api.put("/buckets/b"), 201)
    etag = api.get("/buckets/b").headers["ETag"]
    responses = {
        200: api.get("/buckets/b"),
        201: api.put("/buckets/b/groups/g", json={"data": {"members": []}}),
        304: api.get("/buckets/b", headers={"If-None-Match": etag}),
        307: api.get("/buckets/b/", allow_redirects=False),
        400: api.put("/buckets/b", data=b"{", headers={"Content-Type": "application/json"}),
        401: api.as_user(None).put("/buckets/x"),
        403: api.as_user(("mallory", "pw")).put("/buckets/b", json={}),
        404: api.get("/nothing"),
        405: api.request("TRACE", "/buckets/b"),
        406: api.get("/buckets", headers={"Accept": "text/html"}),
        412: api.put("/buckets/b", json={}, headers={"If-Match": '"1"'}),
        413: api.put("/buckets/b", data=b"x" * 2000),
        415: api.put("/buckets/b", data=b"{}", headers={"Content-Type": "text/plain"}),
    }
    responses[200.5] = api.request(
        "OPTIONS",
        "/buckets",
        auth=None,
        headers={"Origin": "http://example.com", "Access-Control-Request-Method": "GET"},
    )
    for status, response in responses.items():
        assert response.status_code == int(status), (status, response.text)
        assert response.headers.get("Content-Security-Policy") == CSP, status
        assert response.headers.get("X-Content-Type-Options") == "nosniff", status


# -- CORS ---------------------------------------------------------------------


def test_cors_origins_are_configurable(start_app):
    daemon = start_app(cors_origins='["https://good.example", "https://*.trusted.example"]')
    api = Api(daemon)
    assert_status(api.put("/buckets/b"), 201)

    for origin in ("https://good.example", "https://app.trusted.example"):
        response = assert_status(api.get("/buckets/b", headers={"Origin": origin}), 200)
        assert response.headers["Access-Control-Allow-Origin"] == origin
        preflight = api.request(
            "OPTIONS",
            "/buckets/b",
            auth=None,
            headers={"Origin": origin, "Access-Control-Request-Method": "PUT"},
        )
        assert assert_status(preflight, 200).headers["Access-Control-Allow-Origin"] == origin

    assert "Access-Control-Allow-Origin" not in api.get("/buckets/b").headers
    for origin in (
        "https://evil.example",
        "https://good.example.evil",
        "null",
        "https://trusted.example",
    ):
        body = assert_error(api.get("/buckets/b", headers={"Origin": origin}), 400, 107)
        assert body["message"] == f"Origin in header: {origin} not allowed"
        assert body["details"] == [
            {"location": "header", "name": "Origin", "description": f"{origin} not allowed"}
        ]
        preflight = api.request(
            "OPTIONS",
            "/buckets/b",
            auth=None,
            headers={"Origin": origin, "Access-Control-Request-Method": "PUT"},
        )
        assert (
            "Access-Control-Allow-Origin" not in assert_error(preflight, 400, 107)
            and "Access-Control-Allow-Origin" not in preflight.headers
        )
    # Another site's page cannot write with the user's credentials.
    refused = api.put("/buckets/b2", json={}, headers={"Origin": "https://evil.example"})
    assert_error(refused, 400, 107)
    assert_status(api.get("/buckets/b2"), 403)
    assert_error(api.get("/nothing", headers={"Origin": "https://evil.example"}), 404, 111)


def test_any_origin_by_default(api):
    response = api.get("/buckets", headers={"Origin": "https://anywhere.example"})
    assert assert_status(response, 200).headers["Access-Control-Allow-Origin"] == "*"


# -- logs ---------------------------------------------------------------------


def test_secrets_and_passwords_are_never_logged(start_server):
    password = "correct-horse-7f3a91"
    daemon = start_server(
        plugins="accounts flush",
        auth_policies="account basicauth",
        account_create_principals="system.Everyone",
        log_level="debug",
    )
    api = Api(daemon, auth=None)
    assert_status(api.put("/accounts/carol", json={"data": {"password": password}}), 201)
    carol = api.as_user(("carol", password))
    assert_status(carol.put("/buckets/b"), 201)
    assert_status(carol.get("/"), 200)
    assert_status(carol.patch("/accounts/carol", json={"data": {"password": password + "2"}}), 200)
    for wrong in ("wrong-password-1", "wrong-password-2"):
        api.as_user(("carol", wrong)).get("/")
    api.as_user(ALICE).get("/")
    api.post(
        "/batch",
        json={
            "requests": [
                {"path": "/", "headers": {"Authorization": basic_auth(("carol", password + "2"))}}
            ]
        },
    )
    daemon.stop()

    log = daemon.logs()
    assert "/v1/accounts/carol" in log  # the access log is there, so we read the right file
    for secret in (
        SECRET,
        password,
        "wrong-password-1",
        ALICE[1],
        base64.b64encode(f"carol:{password}".encode()).decode(),
        base64.b64encode(f"{ALICE[0]}:{ALICE[1]}".encode()).decode(),
    ):
        assert secret not in log, f"{secret!r} found in the daemon's log"


# -- file permissions ---------------------------------------------------------


def start_plain_daemon(data_dir):
    """A daemon with nothing but a data directory: it makes and keeps its own secret."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KINTOFS_")}
    env["KINTOFS_FSYNC"] = "false"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kintofs",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--config",
            os.devnull,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_listening(url, process)
    except RuntimeError:
        process.kill()
        raise
    return process, url


def test_data_is_readable_by_its_owner_only(tmp_path):
    os.umask(0o022)  # a permissive shell: the daemon must not inherit it
    data_dir = tmp_path / "data"
    process, url = start_plain_daemon(data_dir)
    try:
        session = requests.Session()
        session.auth = ALICE
        for path, body in (
            ("/buckets/b", {}),
            ("/buckets/b/collections/c", {}),
            ("/buckets/b/groups/g", {"data": {"members": ["x"]}}),
            (f"{RECORDS}/r1", {"data": {"n": 1}}),
        ):
            assert session.put(url + path, json=body, timeout=10).status_code == 201
        assert session.delete(f"{url}{RECORDS}/r1", timeout=10).status_code == 200
    finally:
        process.terminate()
        process.wait(10)

    checked = set()
    assert stat.S_IMODE(os.stat(data_dir).st_mode) == 0o700
    for folder, dirs, files in os.walk(data_dir):
        for name in dirs + files:
            path = os.path.join(folder, name)
            mode = stat.S_IMODE(os.lstat(path).st_mode)
            assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
            checked.add(name)
    assert {
        "_userid_hmac_secret",
        "_format.json",
        "_journal.jsonl",
        "_lock",
        "_bucket.json",
        "_bucket.acl",
        "_collection.json",
        "g.json",
        "g.acl",
        "records",
    } <= checked


# -- failed-login limit -----------------------------------------------------


def test_limiter_counts_failures_per_address_in_a_sliding_window():
    now = [1000.0]
    clock = lambda: now[0]  # noqa: E731
    limiter = LoginRateLimiter(3, 60, clock=clock)
    for _ in range(2):
        limiter.record_failure("10.0.0.1")
        now[0] += 10
    assert limiter.retry_after("10.0.0.1") == 0
    limiter.record_failure("10.0.0.1")  # third failure at t=1020
    assert limiter.retry_after("10.0.0.1") == 40  # the first (t=1000) leaves at t=1060
    assert limiter.retry_after("10.0.0.2") == 0
    now[0] = 1060.5
    assert limiter.retry_after("10.0.0.1") == 0
    assert LoginRateLimiter(0, 60, clock=clock).retry_after("x") == 0  # 0 = no limit


def wsgi_get(app, path, address, authorization=None):
    """GET ``path`` from ``app`` in process, as a client at ``address``."""
    session = wsgi_session(app, "http://kintofs.test", remote_addr=address)
    headers = {"Authorization": authorization} if authorization else {}
    response = session.get("http://kintofs.test" + path, headers=headers, allow_redirects=False)
    return response.status_code, response.headers, response.content


def test_blocked_address_gets_429_on_requests_with_credentials(tmp_path):
    """Drives the real WSGI app in process: failures are recorded through the
    same ``service.record_failed_login`` hook an auth policy calls."""
    settings = load_settings(
        os.devnull,
        environ={},
        overrides={
            "data_dir": str(tmp_path / "data"),
            "fsync": False,
            "userid_hmac_secret": "s",
            "login_rate_limit": 2,
            "login_rate_window_seconds": 60,
        },
    )
    app, service = build_app(settings)
    credentials = basic_auth(("alice", "pw"))
    for _ in range(2):
        service.record_failed_login("10.9.8.7")

    status, headers, body = wsgi_get(app, "/v1/buckets", "10.9.8.7", credentials)
    assert status == 429
    assert b'"errno":117' in body and b'"code":429' in body
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert headers["Content-Security-Policy"] == CSP
    assert wsgi_get(app, "/v1/", "10.9.8.7")[0] == 200  # no credentials: served
    assert wsgi_get(app, "/v1/buckets", "10.9.8.6", credentials)[0] == 200  # other address


def test_wrong_account_passwords_are_limited(start_app):
    daemon = start_app(
        plugins="accounts flush",
        auth_policies="account basicauth",
        account_create_principals="system.Everyone",
        login_rate_limit=3,
        login_rate_window_seconds=2,
    )
    api = Api(daemon, auth=None)
    assert_status(api.put("/accounts/dave", json={"data": {"password": "right-pw"}}), 201)
    for _ in range(3):
        api.as_user(("dave", "wrong")).get("/")
    response = api.as_user(("dave", "right-pw")).get("/")
    assert_error(response, 429, 117)
    assert int(response.headers["Retry-After"]) >= 1
    assert_status(api.get("/"), 200)
    time.sleep(2.1)
    assert (
        assert_status(api.as_user(("dave", "right-pw")).get("/"), 200).json()["user"]["id"]
        == "account:dave"
    )


def test_a_basic_header_with_non_ascii_bytes_is_anonymous_not_an_error():
    from kintofs.web.auth import basic_credentials

    assert basic_credentials({"HTTP_AUTHORIZATION": "Basic \u00e9t\u00e9"}) is None
    assert basic_credentials({"HTTP_AUTHORIZATION": "Basic YWxpY2U6cHc="}) == ("alice", "pw")
