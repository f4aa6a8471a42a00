"""Structured access log: one JSON line per HTTP request.

::

    {"time": "2026-11-25T10:48:00.824Z", "method": "PUT", "path": "/v1/buckets/blog",
     "status": 201, "duration_ms": 3.2, "bytes": 190, "user": "basicauth:07061d37",
     "remote": "127.0.0.1"}

``duration_ms`` runs until the last byte of the response is handed to the
server.  ``user`` is the authenticated user id cut to its policy and first 8
characters: enough to follow one user through a log, not enough to stand in
for them.  Never logged: headers, bodies, query strings (filters can hold
personal data), credentials.  A batch is one line (its sub-requests are
not), with the user of its first authenticated sub-request.

The ``access_log`` setting: ``"-"`` writes to stderr (the default), ``""``
turns the log off, anything else is a file appended to, reopened when
logrotate moves it away.
"""

import json
import logging
import logging.handlers
import sys
import time
from datetime import UTC, datetime

LOGGER_NAME = "kintofs.access"

# environ key of the dict where the request's user id is noted; batch
# sub-requests share their batch's dict.
REQUEST_LOG_KEY = "kintofs.request_log"

USER_PREFIX_CHARS = 8
MAX_PATH_CHARS = 1000


def with_access_log(app, destination):
    """``app`` wrapped to log each request to ``destination`` (see module doc)."""
    if not destination:
        return app
    logger = logging.getLogger(LOGGER_NAME)
    logger.propagate = False  # not mixed into the daemon's own log format
    logger.setLevel(logging.INFO)
    if destination == "-":
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.handlers.WatchedFileHandler(destination, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers = [handler]
    return AccessLog(app, logger)


def note_userid(environ, userid):
    """Called once a request is authenticated: remember who it was."""
    noted = environ.get(REQUEST_LOG_KEY)
    if noted is not None and userid and "userid" not in noted:
        noted["userid"] = userid


def shorten_userid(userid):
    if not userid:
        return None
    policy, separator, rest = userid.partition(":")
    if not separator:
        return userid[:USER_PREFIX_CHARS]
    return f"{policy}:{rest[:USER_PREFIX_CHARS]}"


class AccessLog:
    """WSGI middleware writing one line per request when its response is done."""

    def __init__(self, app, logger):
        self.app = app
        self.logger = logger

    def __call__(self, environ, start_response):
        started = time.monotonic()
        noted = environ[REQUEST_LOG_KEY] = {}
        status = []

        def start_and_note(status_line, headers, exc_info=None):
            status[:] = [int(status_line[:3])]
            return start_response(status_line, headers, exc_info)

        try:
            body = self.app(environ, start_and_note)
        except BaseException:
            self._write(environ, 500, started, 0, noted)
            raise
        return _LoggedBody(
            body,
            lambda sent: self._write(environ, status[0] if status else 500, started, sent, noted),
        )

    def _write(self, environ, status, started, sent, noted):
        self.logger.info(
            json.dumps(
                {
                    "time": datetime.now(UTC)
                    .isoformat(timespec="milliseconds")
                    .replace("+00:00", "Z"),
                    "method": environ.get("REQUEST_METHOD", ""),
                    "path": _path_of(environ),
                    "status": status,
                    "duration_ms": round((time.monotonic() - started) * 1000, 1),
                    "bytes": sent,
                    "user": shorten_userid(noted.get("userid")),
                    "remote": environ.get("REMOTE_ADDR"),
                },
                ensure_ascii=False,
            )
        )


def _path_of(environ):
    # WSGI hands the path as latin-1 characters of its UTF-8 bytes.
    raw = environ.get("PATH_INFO", "").encode("latin-1", "replace")
    return raw.decode("utf-8", "replace")[:MAX_PATH_CHARS]


class _LoggedBody:
    """The response body, counted as it is sent; logs when the server closes it."""

    def __init__(self, body, on_close):
        self.body = body
        self.on_close = on_close
        self.sent = 0

    def __iter__(self):
        for chunk in self.body:
            self.sent += len(chunk)
            yield chunk

    def close(self):
        try:
            if hasattr(self.body, "close"):
                self.body.close()
        finally:
            self.on_close(self.sent)
