"""Shared fixtures: a real kintofs daemon on a free port, over real HTTP.

``server`` is one daemon for the whole session (flush plugin on, fsync off
for speed); ``api`` flushes it before each test.  ``start_server`` starts a
separate daemon with other settings (environment variables, as a container
would set them).
"""
import hashlib
import hmac
import os
import socket
import subprocess
import sys
import time

import pytest
import requests

SECRET = "test-secret"
ALICE = ("alice", "alice-pw")
BOB = ("bob", "bob-pw")


def basicauth_id(auth):
    """The user id kintofs gives ``(username, password)`` with the test SECRET."""
    digest = hmac.new(SECRET.encode(), f"{auth[0]}:{auth[1]}".encode(), hashlib.sha256)
    return "basicauth:" + digest.hexdigest()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Daemon:
    """A kintofs process; ``url`` ends with ``/v1``.

    ``command`` is what runs kintofs (default: this interpreter's
    ``-m kintofs``; the packaging tests pass a bare interpreter and a .pyz).
    ``config`` is the ``--config`` file (default: none). A setting given as
    None unsets the tests' default for it, so the config file's value counts.
    """

    def __init__(self, data_dir, command=None, config=os.devnull, **settings):
        self.data_dir = str(data_dir)
        self.port = free_port()
        self.root_url = f"http://127.0.0.1:{self.port}"
        self.url = self.root_url + "/v1"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KINTOFS_")}
        env.update({"KINTOFS_FSYNC": "false", "KINTOFS_PLUGINS": "flush",
                    "KINTOFS_USERID_HMAC_SECRET": SECRET})
        env.update({f"KINTOFS_{k.upper()}": str(v) for k, v in settings.items()})
        for name in [k for k, v in settings.items() if v is None]:
            del env[f"KINTOFS_{name.upper()}"]
        self.log_path = os.path.join(os.path.dirname(self.data_dir), f"daemon-{self.port}.log")
        self.log = open(self.log_path, "wb")
        command = command or [sys.executable, "-m", "kintofs"]
        self.process = subprocess.Popen(
            [*command, "serve", "--port", str(self.port),
             "--data-dir", self.data_dir, "--config", str(config)],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kintofs exited: {open(self.log_path).read()}")
            try:
                requests.get(self.url + "/__lbheartbeat__", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("kintofs did not start in time")

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()

    def logs(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()


class Api:
    """Readable HTTP conversations with a daemon: ``api.get("/buckets")``."""

    def __init__(self, daemon, auth=ALICE):
        self.daemon = daemon
        self.auth = auth
        self.session = requests.Session()

    def request(self, method, path, *, auth="default", **kwargs):
        url = path if path.startswith("http") else self.daemon.url + path
        kwargs.setdefault("allow_redirects", False)
        auth = self.auth if auth == "default" else auth
        return self.session.request(method, url, auth=auth, timeout=30, **kwargs)

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def head(self, path, **kwargs):
        return self.request("HEAD", path, **kwargs)

    def post(self, path, **kwargs):
        return self.request("POST", path, **kwargs)

    def put(self, path, **kwargs):
        return self.request("PUT", path, **kwargs)

    def patch(self, path, **kwargs):
        return self.request("PATCH", path, **kwargs)

    def delete(self, path, **kwargs):
        return self.request("DELETE", path, **kwargs)

    def as_user(self, auth):
        return Api(self.daemon, auth)


def assert_status(response, status):
    assert response.status_code == status, (
        f"{response.request.method} {response.url}: expected {status}, "
        f"got {response.status_code}: {response.text[:500]}")
    return response


def assert_error(response, status, errno, message=None):
    """A Kinto JSON error body with the right code and errno (and message)."""
    assert_status(response, status)
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["code"] == status
    assert body["errno"] == errno, body
    assert isinstance(body["error"], str) and body["error"]
    if message is not None:
        assert body.get("message") == message, body
    return body


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    daemon = Daemon(tmp_path_factory.mktemp("kintofs") / "data")
    yield daemon
    daemon.stop()


# Point the HTTP tests at an already running server (real Kinto with the flush
# plugin, e.g. http://127.0.0.1:8888/v1) to check the tests themselves.
REFERENCE_URL = os.environ.get("KINTOFS_REFERENCE_URL")


class Remote:
    """A server we did not start: only its URLs."""

    def __init__(self, url):
        self.url = url.rstrip("/")
        self.root_url = self.url.rsplit("/", 1)[0]


@pytest.fixture
def api(request):
    server = Remote(REFERENCE_URL) if REFERENCE_URL else request.getfixturevalue("server")
    response = requests.post(server.url + "/__flush__", timeout=30)
    assert response.status_code == 202
    return Api(server)


@pytest.fixture
def start_server(tmp_path):
    started = []

    def start(data_dir=None, **settings):
        daemon = Daemon(data_dir or tmp_path / f"data{len(started)}", **settings)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()
