"""A requests transport that calls a WSGI app in this process, no socket.

``session = wsgi_session(app, "http://kintofs.test")`` gives a
``requests.Session`` whose requests to that base URL are handed to ``app``
as cheroot (the daemon's HTTP server) would hand them: the same environ keys,
the path percent-decoded except ``%2F``, the query string raw, ``Host`` from
the URL, and the headers cheroot adds to a response (``Date``, ``Server``).
Everything else of requests (auth, redirects, JSON, ``files=``) is unchanged.

What it does not do, on purpose, is what only a real server does: the
request gate (header and body deadlines, 414/431, its own 413 for chunked
bodies), chunked framing on the wire, connection handling, header casing on
the wire.  Tests of those keep a real daemon (``conftest.Daemon``).

A request with a ``timeout`` runs in a worker thread, so a request that
hangs fails the test after the timeout (``requests.ReadTimeout``) as it would
over HTTP, instead of hanging the suite.
"""

import email.utils
import io
import logging
import re
import sys
import threading
from urllib.parse import unquote_to_bytes, urlsplit

import cheroot.server
import requests
import requests.adapters
from urllib3 import HTTPResponse
from urllib3._collections import HTTPHeaderDict

try:
    from urllib3.util.url import _encode_target  # what urllib3 does to the request target
except ImportError:  # pragma: no cover - another urllib3
    _encode_target = str

logger = logging.getLogger(__name__)

SERVER_NAME = cheroot.server.HTTPServer.version  # cheroot's default Server header and SERVER_NAME
QUOTED_SLASH = re.compile(rb"(?i)%2F")
NO_BODY_STATUSES = {204, 205, 304}


def decoded_path(raw_path):
    """PATH_INFO as cheroot builds it: percent-decoded, except ``%2F``, as latin-1."""
    atoms = [unquote_to_bytes(atom) for atom in QUOTED_SLASH.split(raw_path.encode("latin-1"))]
    path = b"%2F".join(atoms)
    if not path.startswith(b"/"):
        path = b"/" + path
    return path.decode("latin-1")


def body_bytes(body):
    """The bytes requests would send (a generator's parts joined: the chunks' payload)."""
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    if hasattr(body, "read"):
        content = body.read()
        return content.encode("utf-8") if isinstance(content, str) else content
    return b"".join(part.encode("utf-8") if isinstance(part, str) else part for part in body)


def environ_for(request, remote_addr="127.0.0.1", remote_port=54321):
    """The WSGI environ cheroot would build for a ``requests.PreparedRequest``."""
    url = urlsplit(request.url)
    target = _encode_target(request.path_url)
    path, _, query = target.partition("?")
    headers = request.headers.copy()  # case-insensitive, as on the wire
    if "Host" not in headers:
        headers["Host"] = url.netloc  # what http.client adds
    # requests sends a generator with Transfer-Encoding: chunked, which cheroot
    # decodes: the app reads the payload from wsgi.input, with no Content-Length.
    chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
    environ = {
        "ACTUAL_SERVER_PROTOCOL": "HTTP/1.1",
        "PATH_INFO": decoded_path(path),
        "QUERY_STRING": query,
        "REMOTE_ADDR": remote_addr,
        "REMOTE_PORT": str(remote_port),
        "REQUEST_METHOD": request.method,
        "REQUEST_URI": target,
        "SCRIPT_NAME": "",
        "SERVER_NAME": SERVER_NAME,
        "SERVER_PORT": str(url.port or (443 if url.scheme == "https" else 80)),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_SOFTWARE": f"{SERVER_NAME} Server",
        "wsgi.errors": sys.stderr,
        "wsgi.input": io.BytesIO(body_bytes(request.body)),
        "wsgi.input_terminated": chunked,
        "wsgi.multiprocess": False,
        "wsgi.multithread": True,
        "wsgi.run_once": False,
        "wsgi.url_scheme": url.scheme,
        "wsgi.version": (1, 0),
    }
    for name, value in headers.items():
        if value is None:
            continue
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        key = name.strip().upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
        elif key == "CONTENT_LENGTH":
            environ["CONTENT_LENGTH"] = value
        else:
            environ["HTTP_" + key] = value
    return environ


def call_app(app, environ):
    """``(status line, header list, body bytes)`` of one WSGI call, as cheroot runs it."""
    started = {}

    def start_response(status, headers, exc_info=None):
        if started and not exc_info:
            raise RuntimeError("WSGI start_response called a second time with no exc_info.")
        started["status"], started["headers"] = status, list(headers)
        return lambda data: chunks.append(data)  # the legacy write() callable

    chunks = []
    try:
        result = app(environ, start_response)
        try:
            for chunk in result:
                if not isinstance(chunk, bytes):
                    raise ValueError("WSGI Applications must yield bytes")
                chunks.append(chunk)
        finally:
            if hasattr(result, "close"):
                result.close()
    except Exception:
        # cheroot logs the error and answers a bare 500.
        logger.exception(
            "WSGI app raised on %s %s", environ["REQUEST_METHOD"], environ["PATH_INFO"]
        )
        return "500 Internal Server Error", [("Content-Type", "text/plain")], b""
    return started["status"], started["headers"], b"".join(chunks)


class WSGIAdapter(requests.adapters.HTTPAdapter):
    """Send every request to ``app`` in this process (mount it on a base URL)."""

    def __init__(self, app, remote_addr="127.0.0.1"):
        super().__init__()
        self.app = app
        self.remote_addr = remote_addr

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        environ = environ_for(request, self.remote_addr)
        seconds = timeout[1] if isinstance(timeout, tuple) else timeout
        if seconds is None:
            status, headers, body = call_app(self.app, environ)
        else:
            status, headers, body = self._call_with_timeout(environ, seconds, request)
        return self.build_response(request, self._raw_response(request, status, headers, body))

    def _call_with_timeout(self, environ, seconds, request):
        outcome = []
        worker = threading.Thread(
            target=lambda: outcome.append(call_app(self.app, environ)),
            name="wsgi-request",
            daemon=True,
        )
        worker.start()
        worker.join(seconds)
        if not outcome:
            raise requests.ReadTimeout(
                f"in-process app did not answer in {seconds} s", request=request
            )
        return outcome[0]

    @staticmethod
    def _raw_response(request, status, headers, body):
        code = int(status[:3])
        names = {name.lower() for name, _ in headers}
        out = HTTPHeaderDict()
        for name, value in headers:
            out.add(name, value)
        if "date" not in names:
            out.add("Date", email.utils.formatdate(usegmt=True))
        if "server" not in names:
            out.add("Server", SERVER_NAME)
        if request.method == "HEAD" or code < 200 or code in NO_BODY_STATUSES:
            body = b""
        return HTTPResponse(
            body=io.BytesIO(body),
            headers=out,
            status=code,
            reason=status[4:],
            preload_content=False,
            decode_content=False,
            request_method=request.method,
            request_url=request.url,
        )

    def close(self):
        pass


def wsgi_session(app, base_url, remote_addr="127.0.0.1"):
    """A ``requests.Session`` sending requests under ``base_url`` to ``app``."""
    session = requests.Session()
    session.trust_env = False  # no proxy or netrc look-ups: there is no network
    session.mount(base_url.rstrip("/") + "/", WSGIAdapter(app, remote_addr))
    return session
