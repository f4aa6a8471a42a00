"""Push streams over HTTP: Server-Sent Events of the changes a caller may read.

    GET /v1/events                                        everything
    GET /v1/events/buckets/<bucket>                       a bucket's groups, collections, records
    GET /v1/events/buckets/<bucket>/collections/<coll>    a collection's records

Each event is ``id:`` (a position to resume from), ``event:`` (create,
update or delete) and ``data:`` (JSON: ``action``, ``uri``, ``resource_name``,
``data``, ``timestamp``); see kintofs/push/hub.py.  A reconnect with
``Last-Event-ID`` (EventSource sends it) or ``?_since=<ts>`` first gets what
it missed.  Browsers' EventSource cannot send an ``Authorization`` header:
``?_auth=<the header's value>`` stands for it (``Basic dXNlcjpwYXNz``, or
a Bearer token), and the access log never records query strings.

The request is served by a worker like any other; then the worker hands the
socket to the push sender (:class:`StreamingGateway`) and is free: a stream
holds a socket, never a thread.
"""

from __future__ import annotations

import logging
import resource

import bottle
from cheroot import wsgi

from ..push.hub import Hub, Scope, Subscriber, parse_position
from ..push.sender import RETRY_MS, Sender, sse_bytes
from . import errors

logger = logging.getLogger(__name__)

STREAM_KEY = "kintofs.stream"  # environ: how the gateway starts the stream
PATHS = (
    "/v1/events",
    "/v1/events/buckets/<bucket>",
    "/v1/events/buckets/<bucket>/collections/<collection>",
)
STREAM_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: pass events on at once
}


# File descriptors kept for everything but streams (requests, lists, logs).
SPARE_FILES = 256


def stream_limit():
    """How many streams fit under the open file limit, with room to spare: past
    it, accept() would fail and no request at all could be served."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 100_000
    return max(16, soft - SPARE_FILES)


class Push:
    """The hub, the sender, and their place in the service."""

    def __init__(self, service):
        self.service = service
        self.max_streams = stream_limit()
        self.sender = Sender(heartbeat_seconds=service.settings["push_heartbeat_seconds"])
        self.hub = Hub(service.store, service.settings, service.groups_of)
        service.feed.subscribe(self._told)
        service.store.commits.on_settled.append(self.hub.settled)

    def _told(self, change):
        self.hub.changed(change.parent, change.kind, change.id, change.timestamp, change.action)

    def adopted(self, parent, kind, object_id):
        """A hand edit the watcher made a revision."""
        self.hub.changed(parent, kind)

    def stop(self):
        self.hub.stop()
        self.sender.stop()


def setup(service):
    push = service.push = Push(service)
    service.add_capability(
        "push",
        {
            "description": "Live changes as Server-Sent Events, resumable, filtered by permissions",
            "url": service.settings["project_docs"],
            "streams": [path.replace("<", "{").replace(">", "}") for path in PATHS],
        },
    )
    for path in PATHS:
        service.add_route(path, ["GET"], lambda state, **ids: subscribe(push, state, **ids))
    return push


def subscribe(push, state, bucket=None, collection=None):
    if len(push.sender) >= push.max_streams:
        return errors.service_unavailable(
            30, "This server holds as many streams as it has files for; try again later."
        )
    if bucket is not None and state.store.get((), "bucket", bucket) is None:
        return errors.object_not_found("bucket", bucket)
    if collection is not None and (
        state.store.get((("bucket", bucket),), "collection", collection) is None
    ):
        return errors.object_not_found("collection", collection)
    # EventSource reconnects to the same URL with Last-Event-ID: that wins over _since.
    asked, where, name = state.environ.get("HTTP_LAST_EVENT_ID"), "header", "Last-Event-ID"
    if asked is None:
        asked, where, name = dict(state.query_params).get("_since"), "querystring", "_since"
    position = None
    if asked is not None:
        position = parse_position(asked)
        if position is None:
            return errors.invalid_param(where, name, "not a position of this stream")
    scope, userid = Scope(bucket, collection), state.userid
    single = scope.single_list is not None

    def start(sock, head):
        stream = push.sender.prepare(sock, head + f"retry: {RETRY_MS}\n\n".encode())

        def send(event):
            return push.sender.send(stream, event.encoded(single, sse_of))

        subscriber = Subscriber(scope, userid, send, lambda: push.sender.close(stream))
        stream.on_closed = lambda: push.hub.unsubscribe(subscriber)
        # Subscribed before the client sees its answer: nothing it makes after is missed.
        push.hub.subscribe(subscriber, position)
        push.sender.begin(stream)

    state.environ[STREAM_KEY] = start
    return bottle.HTTPResponse("", 200, dict(STREAM_HEADERS))


def authorization_from_query(environ):
    """EventSource's way to authenticate: ``?_auth=`` as the Authorization header."""
    if "HTTP_AUTHORIZATION" in environ or not environ.get("PATH_INFO", "").startswith("/v1/events"):
        return
    from urllib.parse import parse_qsl

    for name, value in parse_qsl(environ.get("QUERY_STRING", "")):
        if name == "_auth":
            environ["HTTP_AUTHORIZATION"] = value
            return


def sse_of(event, single_list):
    return sse_bytes(event.action, event.body(), event.position(single_list))


class StreamingGateway(wsgi.Gateway_10):
    """cheroot's WSGI gateway, which gives a stream's socket to the push sender.

    For a stream, the response head is written as the app made it (status,
    headers, CORS), without a length: the body ends when the connection
    does.  cheroot then lets the connection go without closing its socket
    (``linger``), and the worker is free.
    """

    def respond(self):
        authorization_from_query(self.env)
        response = self.req.server.wsgi_app(self.env, self.start_response)
        start = self.env.get(STREAM_KEY)
        if start is None or not self.req.status.startswith(b"200"):
            self._write_all(response)
            return
        if hasattr(response, "close"):
            response.close()
        req = self.req
        kept = [
            (name, value)
            for name, value in req.outheaders
            if name.lower() not in (b"content-length", b"transfer-encoding", b"connection")
        ]
        head = b"HTTP/1.1 " + req.status + b"\r\n"
        head += b"".join(name + b": " + value + b"\r\n" for name, value in kept)
        head += b"Connection: close\r\n\r\n"
        req.sent_headers = True  # cheroot must write nothing more
        req.close_connection = True
        req.conn.linger = True  # its close() leaves the socket to the sender ...
        # ... and only closes its reader: its writer's reference would keep
        # the socket open after the sender closes it.
        req.conn.wfile.close()
        start(req.conn.socket, head)

    def _write_all(self, response):
        try:
            for chunk in filter(None, response):
                self.write(chunk)
        finally:
            self.req.ensure_headers_sent()
            if hasattr(response, "close"):
                response.close()
