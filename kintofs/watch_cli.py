"""``kintofs watch URL``: print the changes of a push stream as they happen.

URL is a stream of a kintofs server (see kintofs/web/streams.py):
``.../v1/events``, ``.../v1/events/buckets/<b>`` or
``.../v1/events/buckets/<b>/collections/<c>``.  Each change is one line,
``<id> <action> <uri>``; with ``--json``, the event's JSON as the server
sent it (``action``, ``uri``, ``resource_name``, ``data``, ``timestamp``),
one object a line.  ``<id>`` is the event's position: pass it to
``--since`` to print what came after it.

When the connection drops (the daemon restarts, the network goes) a note
says so on stderr, and the command reconnects with a short back-off, from
the last event it printed (``Last-Event-ID``): the changes made meanwhile
are printed once, then the live ones.  Before the first event there is no
position to resume from unless ``--since`` gave one.  Ctrl-C stops it.

The first connection must succeed: a wrong URL, a refused connection or an
error answer ends the command (exit status 1).  Later, an error answer that
retrying cannot change (401, 403, 404, ...) ends it too; anything else is
retried for as long as it runs.  Standard library only (http.client).
"""

import base64
import getpass
import http.client
import json
import os
import ssl
import sys
import time
from urllib.parse import parse_qsl, unquote, urlencode, urljoin, urlsplit

CONNECT_TIMEOUT_SECONDS = 10
# The server writes a heartbeat comment every 20 s on an idle stream: this
# long without a byte means the connection is gone (a laptop's sleep, a NAT).
READ_TIMEOUT_SECONDS = 60
FIRST_DELAY_SECONDS = 0.5  # the first retry; doubled at each failure in a row
MAX_DELAY_SECONDS = 30.0
MAX_REDIRECTS = 5
RETRIED_STATUSES = {408, 429, 500, 502, 503, 504}  # anything else that is not 200 is final
NAME = "kintofs watch"


class WatchError(Exception):
    """A failure to report in one line (exit status 1)."""


class Dropped(Exception):
    """The connection could not be made or was lost; worth another try."""

    def __init__(self, reason, retry_after=None):
        super().__init__(reason)
        self.retry_after = retry_after


def add_parser(commands):
    """Register ``watch`` on the ``kintofs`` subcommands."""
    watch = commands.add_parser(
        "watch",
        help="print the changes of a push stream (/v1/events...) as they happen",
        description="Print the changes of a push stream as they happen; when the connection "
        "drops, reconnect and resume after the last event printed.",
    )
    watch.add_argument(
        "url", metavar="URL", help="a stream, e.g. http://127.0.0.1:8888/v1/events/buckets/b"
    )
    watch.add_argument(
        "--user",
        metavar="NAME[:PASSWORD]",
        help="Basic auth credentials (without :PASSWORD, the password is asked for)",
    )
    watch.add_argument(
        "--since",
        metavar="POSITION",
        help="first print the changes after this timestamp or event id",
    )
    watch.add_argument(
        "--json", action="store_true", help="print each event's JSON, one object a line"
    )


def run(args):
    """Run ``kintofs watch``; the process exit status."""
    try:
        target = Target(args.url, args.user, args.since)
    except WatchError as error:
        print(f"{NAME}: {error}", file=sys.stderr)
        return 2
    try:
        Watcher(target, args.json).run()
    except KeyboardInterrupt:
        return 130  # Ctrl-C: the way a watch ends, nothing to say
    except BrokenPipeError:  # `kintofs watch URL | head`: the reader has gone
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the exit's flush fails no more
        return 0
    except WatchError as error:
        print(f"{NAME}: {error}", file=sys.stderr, flush=True)
        return 1
    return 0


# ---------------------------------------------------------------------------
# What to connect to
# ---------------------------------------------------------------------------


class Target:
    """The stream's URL, split as http.client needs it, and the credentials.

    A ``_since`` in the URL's query counts as ``--since``: it is sent only
    until the first event, after which ``Last-Event-ID`` says where to resume
    (the server prefers ``_since`` when it gets both).
    """

    def __init__(self, url, user=None, since=None):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WatchError(f"not an http:// or https:// URL: {url}")
        self.scheme = parts.scheme
        try:
            self.host, self.port = parts.hostname, parts.port
        except ValueError as error:
            raise WatchError(f"{error}: {url}") from None
        query = parse_qsl(parts.query, keep_blank_values=True)
        in_url = [value for name, value in query if name == "_since"]
        self.since = since if since is not None else (in_url[-1] if in_url else None)
        self.query = [(name, value) for name, value in query if name != "_since"]
        self.path = parts.path or "/"
        self.authorization = None
        if user is None and parts.username is not None:
            user = unquote(parts.username)
            if parts.password is not None:
                user += ":" + unquote(parts.password)
        if user is not None:
            name, colon, password = user.partition(":")
            if not colon:
                password = getpass.getpass(f"password for {name}: ")
            token = base64.b64encode(f"{name}:{password}".encode()).decode("ascii")
            self.authorization = "Basic " + token

    @property
    def origin(self):
        default = 443 if self.scheme == "https" else 80
        port = "" if self.port in (None, default) else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}"

    def url(self, since=None):
        return self.origin + self.request_target(since)

    def request_target(self, since=None):
        query = list(self.query) + ([("_since", since)] if since is not None else [])
        return self.path + ("?" + urlencode(query) if query else "")

    def follow(self, location):
        """Take a redirection to ``location`` (same server only: it gets the credentials)."""
        parts = urlsplit(urljoin(self.url(), location))
        if (parts.scheme, parts.hostname, parts.port) != (self.scheme, self.host, self.port):
            raise WatchError(f"redirected to another server: {location}")
        self.path = parts.path or "/"
        query = parse_qsl(parts.query, keep_blank_values=True)
        self.query = [(name, value) for name, value in query if name != "_since"]

    def connection(self):
        if self.scheme == "https":
            return http.client.HTTPSConnection(
                self.host,
                self.port,
                timeout=CONNECT_TIMEOUT_SECONDS,
                context=ssl.create_default_context(),
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=CONNECT_TIMEOUT_SECONDS)


# ---------------------------------------------------------------------------
# Connecting, reading, reconnecting
# ---------------------------------------------------------------------------


class Watcher:
    def __init__(self, target, as_json=False, out=None, err=None):
        self.target, self.as_json = target, as_json
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.last_id = None  # the last event id received: where a reconnect resumes

    def run(self):
        """Print events until Ctrl-C (KeyboardInterrupt) or a final error (WatchError)."""
        response = self._connect(first=True)
        delay = FIRST_DELAY_SECONDS
        while True:
            reason = self._read(response)
            while True:
                self._note(f"{reason}; reconnecting in {delay:g} s" + self._resuming())
                time.sleep(delay)
                delay = min(delay * 2, MAX_DELAY_SECONDS)
                try:
                    response = self._connect(first=False)
                except Dropped as dropped:
                    reason = f"cannot connect ({dropped})"
                    if dropped.retry_after is not None:
                        delay = min(max(delay, dropped.retry_after), MAX_DELAY_SECONDS * 2)
                    continue
                break
            self._note("reconnected")
            delay = FIRST_DELAY_SECONDS

    def _resuming(self):
        if self.last_id is not None:
            return f", after {self.last_id}"
        if self.target.since is not None:
            return f", after {self.target.since}"
        return " (no event yet: changes made meanwhile will not be shown)"

    def _connect(self, first):
        """The open stream's response; Dropped (retry) or WatchError (give up)."""
        try:
            return self._open()
        except Dropped as dropped:
            if first:
                raise WatchError(f"cannot connect to {self.target.url()}: {dropped}") from None
            raise

    def _open(self):
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.target.authorization:
            headers["Authorization"] = self.target.authorization
        since = None
        if self.last_id is not None:
            headers["Last-Event-ID"] = self.last_id
        else:
            since = self.target.since
        for _ in range(MAX_REDIRECTS + 1):
            connection = self.target.connection()
            try:
                connection.request("GET", self.target.request_target(since), headers=headers)
                if connection.sock is not None:
                    connection.sock.settimeout(READ_TIMEOUT_SECONDS)
                response = connection.getresponse()
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                raise Dropped(describe(error)) from None
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                location = response.getheader("Location")
                connection.close()
                self.target.follow(location)
                continue
            if response.status != 200:
                self._refused(connection, response)
            content_type = response.getheader("Content-Type", "")
            if not content_type.startswith("text/event-stream"):
                connection.close()
                raise WatchError(
                    f"{self.target.url()} is not an event stream (Content-Type: {content_type!r}); "
                    "streams are under /v1/events"
                )
            return response
        raise WatchError(f"more than {MAX_REDIRECTS} redirections")

    def _refused(self, connection, response):
        """An answer other than the stream: say what the server said."""
        try:
            body = response.read(64 * 1024)
        except (OSError, http.client.HTTPException):
            body = b""
        finally:
            connection.close()
        text = f"{response.status} {response.reason}"
        try:
            error = json.loads(body)
            if isinstance(error, dict) and error.get("message"):
                text += f": {error['message']}"
        except ValueError:
            pass
        if response.status in RETRIED_STATUSES:
            retry_after = response.getheader("Retry-After")
            seconds = float(retry_after) if retry_after and retry_after.isdigit() else None
            raise Dropped(text, retry_after=seconds)
        if "/events" not in self.target.path:
            text += " (streams are under /v1/events)"
        raise WatchError(f"{self.target.url()}: {text}")

    def _read(self, response):
        """Print the stream's events until it ends; why it ended."""
        try:
            for event_id, event, data in parse_events(response):
                if event_id is not None:
                    self.last_id = event_id
                if event == "resync":  # the server found us too slow, and closes
                    return f"the server dropped the stream ({resync_reason(data)})"
                self._print(event_id, event, data)
            return "the server closed the stream"
        except TimeoutError:
            return f"nothing received for {READ_TIMEOUT_SECONDS} s"
        except (OSError, http.client.HTTPException) as error:
            return f"connection lost ({describe(error)})"
        finally:
            response.close()

    def _print(self, event_id, event, data):
        try:
            payload = json.loads(data)
        except ValueError:
            payload = None
        if self.as_json:
            if payload is None:
                payload = {"event": event, "data": data}
            line = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        elif isinstance(payload, dict) and "uri" in payload:
            line = f"{event_id or '-'} {payload.get('action', event)} {payload['uri']}"
        else:
            line = f"{event_id or '-'} {event} {data}"
        print(line, file=self.out, flush=True)

    def _note(self, text):
        print(f"{NAME}: {text}", file=self.err, flush=True)


def describe(error):
    """A connection error in a few words."""
    if isinstance(error, http.client.RemoteDisconnected):
        return "the server closed the connection"
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def resync_reason(data):
    try:
        return str(json.loads(data)["reason"])
    except (ValueError, TypeError, KeyError):
        return data.strip() or "resync"


def parse_events(lines):
    """``(id, event, data)`` of each event of a text/event-stream (bytes lines).

    As EventSource does (the HTML standard's rules): ``id`` is the last id
    the stream set, None before any; ``event`` defaults to ``message``;
    several ``data:`` lines join with newlines; comments and ``retry:`` are
    read and ignored; an event is dispatched at a blank line.
    """
    last_id = None
    event = ""
    data: list[str] = []
    first = True
    for raw in lines:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if first:
            line, first = line.removeprefix("\ufeff"), False
        if not line:
            if data:
                yield last_id, event or "message", "\n".join(data)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value
        elif field == "id" and "\0" not in value:
            last_id = value or None
