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

import logging
import logging.handlers
import sys
import time
from json import encoder as json_encoder

from .jsontext import dumps_function

LOGGER_NAME = "kintofs.access"

# environ key of the dict where the request's user id is noted; batch
# sub-requests share their batch's dict.
REQUEST_LOG_KEY = "kintofs.request_log"

USER_PREFIX_CHARS = 8
MAX_PATH_CHARS = 1000

# The keys of a line, in their order.
FIELDS = ("time", "method", "path", "status", "duration_ms", "bytes", "user", "remote")

# json.dumps(line, ensure_ascii=False), its encoder made once.
_encode = dumps_function(ensure_ascii=False)


def with_access_log(app, destination):
    """``app`` wrapped to log each request to ``destination`` (see module doc)."""
    if not destination:
        return app
    logger = logging.getLogger(LOGGER_NAME)
    logger.propagate = False  # not mixed into the daemon's own log format
    logger.setLevel(logging.INFO)
    if destination == "-":
        handler = _LineStreamHandler(sys.stderr)
    else:
        handler = _LineFileHandler(destination, encoding="utf-8")
    handler.setFormatter(_LINE_FORMAT)
    logger.handlers = [handler]
    return AccessLog(app, logger, handler)


# A line is the message alone: what this formatter makes of it, made without it.
_LINE_FORMAT = logging.Formatter("%(message)s")


class _LineFormatting:
    def format(self, record):
        if self.formatter is _LINE_FORMAT and not (
            record.exc_info or record.exc_text or record.stack_info
        ):
            return record.getMessage()
        return super().format(record)


class _LineStreamHandler(_LineFormatting, logging.StreamHandler):
    pass


class _LineFileHandler(_LineFormatting, logging.handlers.WatchedFileHandler):
    pass


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

    def __init__(self, app, logger, handler=None):
        self.app = app
        self.logger = logger
        self.handler = handler  # the one with_access_log made, if any (see _emit)

    def __call__(self, environ, start_response):
        logged = _LoggedBody(self, environ)

        def start_and_note(status_line, headers, exc_info=None):
            logged.status = int(status_line[:3])
            return start_response(status_line, headers, exc_info)

        try:
            logged.body = self.app(environ, start_and_note)
        except BaseException:
            self._write(environ, 500, logged.started, 0, logged.noted)
            raise
        return logged

    def _write(self, environ, status, started, sent, noted):
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        values = (
            utc_now_text(),
            environ.get("REQUEST_METHOD", ""),
            _path_of(environ),
            status,
            round((time.monotonic() - started) * 1000, 1),
            sent,
            shorten_userid(noted.get("userid")),
            environ.get("REMOTE_ADDR"),
        )
        self._emit(_line(*values) or _encode(dict(zip(FIELDS, values, strict=True))))

    def _emit(self, line):
        """``logger.info(line)``, as the logger's handlers see it.

        While the handler with_access_log made is the only one that can see the
        line (no other handler, no filter, its own formatter), the line goes to
        it as it is: a LogRecord and the logger's dispatch would cost a third of
        the line, for nobody to look at them.  Else a record, without the search
        of the caller's file and line that logger.info makes (no line shows it).
        """
        logger, handler = self.logger, self.handler
        handlers = logger.handlers
        if (
            handler is not None
            and len(handlers) == 1
            and handlers[0] is handler
            and not (logger.propagate or logger.filters or handler.filters)
            and handler.formatter is _LINE_FORMAT
            and handler.level <= logging.INFO
        ):
            handler.acquire()  # what Handler.handle does around emit
            try:
                handler.emit(_Line(line))
            finally:
                handler.release()
            return
        logger.handle(
            logger.makeRecord(logger.name, logging.INFO, "(access log)", 0, line, (), None)
        )


class _Line:
    """All that with_access_log's handlers read of a LogRecord, and all that
    Handler.handleError does: the message."""

    __slots__ = ("msg",)
    args = ()
    exc_info = exc_text = stack_info = None
    levelno = logging.INFO

    def __init__(self, msg):
        self.msg = msg

    def getMessage(self):
        return self.msg


def _line(when, method, path, status, duration, sent, user, remote):
    """What ``json.dumps(dict(zip(FIELDS, values)), ensure_ascii=False)`` gives,
    written out for the values a request has (strings, None, ints, a float);
    None for any other value."""
    if not (
        type(method) is str
        and type(status) is int
        and type(duration) is float
        and type(sent) is int
        and type(user) in _STRING_OR_NONE
        and type(remote) in _STRING_OR_NONE
    ):
        return None
    return (
        f'{{"time": {_quoted(when)}, "method": {_quoted(method)}, "path": {_quoted(path)}, '
        f'"status": {status}, "duration_ms": {duration!r}, "bytes": {sent}, '
        f'"user": {_quoted_or_null(user)}, "remote": {_quoted_or_null(remote)}}}'
    )


_quoted = json_encoder.encode_basestring  # a str as json.dumps(ensure_ascii=False) writes it
_STRING_OR_NONE = (str, type(None))


def _quoted_or_null(value):
    return "null" if value is None else _quoted(value)


# The last second formatted, shared by every thread: (whole seconds, "...T10:48:00").
_last_second = (None, "")


def utc_now_text():
    """Now as ``2026-11-25T10:48:00.824Z``: what ``datetime.now(UTC).isoformat(
    timespec="milliseconds")`` gives, the date and time formatted once a second."""
    global _last_second
    milliseconds = time.time_ns() // 1_000_000  # datetime.now truncates the same clock
    second = milliseconds // 1000
    cached_second, text = _last_second
    if cached_second != second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _last_second = (second, text)
    return f"{text}.{milliseconds % 1000:03d}Z"


def _path_of(environ):
    # WSGI hands the path as latin-1 characters of its UTF-8 bytes.
    raw = environ.get("PATH_INFO", "").encode("latin-1", "replace")
    return raw.decode("utf-8", "replace")[:MAX_PATH_CHARS]


class _LoggedBody:
    """The response body, counted as it is sent; logs when the server closes it."""

    def __init__(self, log, environ):
        self.started = time.monotonic()
        self.log, self.environ = log, environ
        self.noted = environ[REQUEST_LOG_KEY] = {}
        self.status = 500  # until the app starts its response
        self.body = ()
        self.sent = 0

    def __iter__(self):
        body = self.body
        if type(body) is list and len(body) == 1:
            # Bottle's answer, one chunk: the server takes it as it starts to iterate.
            self.sent = len(body[0])
            return iter(body)
        return self._counted()

    def _counted(self):
        for chunk in self.body:
            self.sent += len(chunk)
            yield chunk

    def close(self):
        try:
            if hasattr(self.body, "close"):
                self.body.close()
        finally:
            self.log._write(self.environ, self.status, self.started, self.sent, self.noted)
