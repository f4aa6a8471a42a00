"""Shared fixtures and helpers: kintofs in process, or a real daemon over HTTP.

Fixtures
    ``api``          an :class:`Api` on a flushed server: the session's
                     in-process app (``app_server``), or the session's real
                     daemon (``server``) for tests marked ``@pytest.mark.daemon``,
                     or ``KINTOFS_REFERENCE_URL`` when set (real HTTP).
    ``app_server``   one :class:`InProcessServer` for the whole session.
    ``server``       one :class:`Daemon` for the whole session, started on
                     first use (flush plugin on, fsync off for speed).
    ``start_app``    a separate in-process server with other settings
                     (``make_server`` for a module-scoped one).
    ``start_server`` a separate daemon with other settings (environment
                     variables, as a container would set them).

In process, requests go through :mod:`wsgi_transport` to the same WSGI app
``kintofs serve`` runs, built from the same settings: no port, no process
start, no socket.  What only a process has needs a daemon: the request gate
and cheroot on a socket (raw bytes, chunked framing, slow clients), signals,
its log and exit code, a second process on the same data, and clients that
make their own connections (kinto-http).  ``KINTOFS_TESTS_OVER_HTTP=1`` runs
the in-process tests on daemons instead, to compare.

Helpers: :func:`basicauth_id`, :func:`basic_auth`, :func:`free_port`,
:func:`flush`, :func:`file_tree`, :func:`raw_exchange`, :func:`wait_until_listening`,
:func:`assert_status`, :func:`assert_error`, :func:`header_set`.
"""

import base64
import hashlib
import hmac
import itertools
import logging
import os
import socket
import subprocess
import sys
import time

import pytest
import requests
from wsgi_transport import wsgi_session

from kintofs.config import load_settings
from kintofs.fsstore import FileSystemStore
from kintofs.server import build_app, start_watcher
from kintofs.web.accesslog import LOGGER_NAME as ACCESS_LOGGER
from kintofs.web.accesslog import with_access_log

SECRET = "test-secret"
ALICE = ("alice", "alice-pw")
BOB = ("bob", "bob-pw")

# The settings every test server starts from (see Daemon); None unsets one.
TEST_SETTINGS = {"fsync": "false", "plugins": "flush", "userid_hmac_secret": SECRET}

# Point the HTTP tests at an already running server (real Kinto with the flush
# plugin, e.g. http://127.0.0.1:8888/v1) to check the tests themselves.
REFERENCE_URL = os.environ.get("KINTOFS_REFERENCE_URL")

# KINTOFS_TESTS_OVER_HTTP=1 runs on real daemons what would run in process
# (``api``, ``app_server``, ``start_app``, ``make_server``): to compare the two.
OVER_HTTP = os.environ.get("KINTOFS_TESTS_OVER_HTTP", "") not in ("", "0")


def basicauth_id(auth, secret=SECRET):
    """The user id kintofs gives ``(username, password)`` with ``secret``."""
    digest = hmac.new(secret.encode(), f"{auth[0]}:{auth[1]}".encode(), hashlib.sha256)
    return "basicauth:" + digest.hexdigest()


def basic_auth(auth):
    """The ``Authorization`` header value for ``(username, password)``."""
    return "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def settings_environment(settings):
    """The ``KINTOFS_*`` variables of a test server: TEST_SETTINGS, then ``settings``
    (a value of None removes the variable, so the config file's value counts)."""
    env = {f"KINTOFS_{k.upper()}": v for k, v in TEST_SETTINGS.items()}
    env.update({f"KINTOFS_{k.upper()}": str(v) for k, v in settings.items()})
    for name in [k for k, v in settings.items() if v is None]:
        del env[f"KINTOFS_{name.upper()}"]
    return env


def wait_until_listening(url, process=None, timeout=20, log_path=None):
    """Poll ``url``'s load-balancer heartbeat until it answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            log = open(log_path).read() if log_path else ""
            raise RuntimeError(f"kintofs exited: {log}")
        try:
            requests.get(url + "/__lbheartbeat__", timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("kintofs did not start in time")


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
        env.update(settings_environment(settings))
        self.log_path = os.path.join(os.path.dirname(self.data_dir), f"daemon-{self.port}.log")
        self.log = open(self.log_path, "wb")
        command = command or [sys.executable, "-m", "kintofs"]
        self.process = subprocess.Popen(
            [
                *command,
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                self.data_dir,
                "--config",
                str(config),
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout=20):
        wait_until_listening(self.url, self.process, timeout, self.log_path)

    def session(self):
        return requests.Session()

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


_app_numbers = itertools.count(1)


class InProcessServer:
    """The WSGI app ``kintofs serve`` would run for these settings, in this process.

    Same arguments, settings and URLs as :class:`Daemon` (``url`` ends with
    ``/v1``) but no process, port or socket: ``session()`` gives a
    ``requests.Session`` that calls the app directly (see wsgi_transport).
    Its host name (``kintofs-<n>.test``) resolves nowhere, so a request that
    does not go through such a session fails instead of reaching something
    else.  Like ``serve``, the app is wrapped in the access log (a file beside
    the data directory unless ``access_log`` is set; there is one access
    logger per process, so the newest server's file gets the lines).  The
    watcher of files edited by hand (``watch_files``) only starts with
    ``watch=True``: in this process it would share the GIL with every
    request, and no in-process test edits files by hand (test_live_files
    does, on daemons).
    """

    def __init__(self, data_dir, config=os.devnull, watch=False, **settings):
        self.data_dir = str(data_dir)
        number = next(_app_numbers)
        self.root_url = f"http://kintofs-{number}.test"
        self.url = self.root_url + "/v1"
        settings.setdefault(
            "access_log", os.path.join(os.path.dirname(self.data_dir), f"access-{number}.log")
        )
        self.settings = load_settings(
            config, overrides={"data_dir": self.data_dir}, environ=settings_environment(settings)
        )
        app, self.service = build_app(self.settings)
        self.app = with_access_log(app, self.settings["access_log"])
        self.watcher = None
        if watch and self.settings["watch_files"]:
            self.watcher = start_watcher(self.service)

    @property
    def store(self):
        return self.service.store

    def session(self):
        return wsgi_session(self.app, self.root_url)

    def stop(self):
        if self.watcher:
            self.watcher.stop()
            self.watcher = None
        self.service.push.stop()
        access = logging.getLogger(ACCESS_LOGGER)
        ours = os.path.abspath(self.settings["access_log"])
        for handler in list(access.handlers):
            if getattr(handler, "baseFilename", None) == ours:
                access.removeHandler(handler)
                handler.close()


def make_server(data_dir, **settings):
    """An :class:`InProcessServer` (a :class:`Daemon` under KINTOFS_TESTS_OVER_HTTP)."""
    return (Daemon if OVER_HTTP else InProcessServer)(data_dir, **settings)


class Remote:
    """A server we did not start: only its URLs."""

    def __init__(self, url):
        self.url = url.rstrip("/")
        self.root_url = self.url.rsplit("/", 1)[0]

    def session(self):
        return requests.Session()

    @property
    def data_dir(self):
        pytest.skip("looks at kintofs's files: not for a reference server")


class Api:
    """Readable HTTP conversations with a server: ``api.get("/buckets")``."""

    def __init__(self, daemon, auth=ALICE):
        self.daemon = daemon
        self.auth = auth
        self.session = daemon.session() if hasattr(daemon, "session") else requests.Session()

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


def flush(server):
    """Empty ``server`` (the flush plugin, anonymously) and return an Api on it."""
    response = Api(server, auth=None).post("/__flush__")
    assert response.status_code == 202, response.text
    return Api(server)


def file_tree(root, ignore=lambda name: False):
    """``{relative path: bytes}`` of every file under ``root`` whose name
    ``ignore`` does not reject: compare two to see what a request changed."""
    tree = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if not ignore(name):
                path = os.path.join(folder, name)
                with open(path, "rb") as f:
                    tree[os.path.relpath(path, root)] = f.read()
    return tree


def fill_disk(path):
    """Append zeros to ``path`` until its file system is full (a small tmpfs)."""
    import errno

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (65536, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as error:
                assert error.errno == errno.ENOSPC
    finally:
        os.close(fd)


def put_line(data_path, acl_path, ts, object_id):
    """The journal line a put leaves, its hash taken from the files as they are."""
    from kintofs.fsstore.journal import content_digest

    found = []
    for path in (data_path, acl_path):
        try:
            with open(path, "rb") as f:
                found.append(f.read())
        except FileNotFoundError:
            found.append(b"")
    return {"ts": ts, "op": "put", "id": object_id, "hash": content_digest(*found)}


def raw_exchange(port, data, timeout=20):
    """Send ``data`` byte for byte on a new connection to a daemon's ``port``,
    then EOF (the server never waits for more); the whole reply, until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        return reply


def assert_status(response, status):
    assert response.status_code == status, (
        f"{response.request.method} {response.url}: expected {status}, "
        f"got {response.status_code}: {response.text[:500]}"
    )
    return response


def header_set(response, name):
    """The comma-separated items of header ``name``, as a set."""
    return {item.strip() for item in response.headers.get(name, "").split(",") if item.strip()}


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


@pytest.fixture(scope="session")
def app_server(tmp_path_factory):
    app = make_server(tmp_path_factory.mktemp("kintofs-app") / "data")
    yield app
    app.stop()


@pytest.fixture
def api(request):
    if REFERENCE_URL:
        target = Remote(REFERENCE_URL)
    elif OVER_HTTP or request.node.get_closest_marker("daemon"):
        target = request.getfixturevalue("server")
    else:
        target = request.getfixturevalue("app_server")
    return flush(target)


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


@pytest.fixture
def start_app(tmp_path):
    started = []

    def start(data_dir=None, **settings):
        app = make_server(data_dir or tmp_path / f"app{len(started)}", **settings)
        started.append(app)
        return app

    yield start
    for app in started:
        app.stop()


def store_with_collection(path):
    """A store on ``path`` holding bucket ``b`` and its collection ``c`` (no fsync)."""
    store = FileSystemStore(path, fsync=False)
    with store.list((), "bucket").transaction() as writer:
        writer.put("b", {}, {})
    with store.list((("bucket", "b"),), "collection").transaction() as writer:
        writer.put("c", {}, {})
    return store
