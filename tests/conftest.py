"""Shared fixtures: a real kintofs daemon on a free port, over real HTTP.

``server`` is one daemon for the whole session (flush plugin on, fsync off
for speed); ``api`` flushes it before each test.  ``start_server`` starts a
separate daemon with other settings (environment variables, as a container
would set them).
"""
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


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Daemon:
    """A kintofs process; ``url`` ends with ``/v1``."""

    def __init__(self, data_dir, **settings):
        self.data_dir = str(data_dir)
        self.port = free_port()
        self.root_url = f"http://127.0.0.1:{self.port}"
        self.url = self.root_url + "/v1"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KINTOFS_")}
        env.update({"KINTOFS_FSYNC": "false", "KINTOFS_PLUGINS": "flush",
                    "KINTOFS_USERID_HMAC_SECRET": SECRET})
        env.update({f"KINTOFS_{k.upper()}": str(v) for k, v in settings.items()})
        self.log_path = os.path.join(os.path.dirname(self.data_dir), f"daemon-{self.port}.log")
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kintofs", "serve", "--port", str(self.port),
             "--data-dir", self.data_dir, "--config", os.devnull],
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


@pytest.fixture
def api(server):
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
