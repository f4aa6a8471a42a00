"""One thread that writes Server-Sent Events to every stream's socket.

A stream's socket is non-blocking; what it cannot take now waits in the
stream's buffer, and the thread writes it when the socket can take more
(``selectors``, epoll on Linux).  A buffer past ``MAX_BUFFERED_BYTES`` means
the subscriber does not keep up: it gets a ``resync`` event and is closed,
so that no stream ever holds unbounded memory.  Every ``HEARTBEAT_SECONDS``
an idle stream gets a comment line, which keeps proxies from closing it
and tells the thread when a client has gone.
"""

from __future__ import annotations

import json
import logging
import selectors
import socket
import threading
import time

from ..waker import Waker

logger = logging.getLogger(__name__)

MAX_BUFFERED_BYTES = 256 * 1024
HEARTBEAT_SECONDS = 20.0
RETRY_MS = 3000  # what EventSource waits before it reconnects


def sse_bytes(event_name, data, event_id=None):
    """One event in the text/event-stream format (data as JSON: one line)."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event_name}")
    lines.append("data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


class Stream:
    """One subscriber's connection."""

    __slots__ = ("sock", "fd", "buffer", "last_sent", "closing", "closed", "on_closed", "begun")

    def __init__(self, sock):
        self.sock = sock
        self.fd = sock.fileno()
        self.buffer = bytearray()
        self.last_sent = time.monotonic()
        self.closing = False  # close once the buffer is written (after a resync)
        self.closed = False
        self.on_closed = None  # called once it is closed (the hub forgets its subscriber)
        self.begun = False  # written by the sender (Sender.begin)


class Sender:
    """Writes what :meth:`send` is given at once when the socket takes it (the
    usual case: a few hundred bytes); only what it cannot take now waits, and
    the thread visits only the streams that have bytes waiting, are closing
    or are new, plus every stream once a second for its heartbeat."""

    def __init__(self, heartbeat_seconds=HEARTBEAT_SECONDS, max_buffered=MAX_BUFFERED_BYTES):
        self.heartbeat_seconds, self.max_buffered = heartbeat_seconds, max_buffered
        self._guard = threading.Lock()  # a stream's buffer and socket writes
        self._streams = {}  # fd -> Stream
        self._attention = set()  # streams the thread must look at (guarded)
        self._registered = {}  # fd -> the events it is registered for (the thread's own)
        self._stopping = False
        self._thread = None  # started with the first stream

    def _start(self):
        self._selector = selectors.DefaultSelector()
        self._waker = Waker(self._selector)
        self._thread = threading.Thread(target=self._run, name="kintofs-push", daemon=True)
        self._thread.start()

    def __len__(self):
        return len(self._streams)

    def prepare(self, sock, head):
        """A Stream for ``sock`` whose first bytes are ``head``: events may be
        queued on it, and nothing is written before :meth:`begin`."""
        sock.setblocking(False)
        stream = Stream(sock)
        stream.buffer += head
        return stream

    def begin(self, stream):
        """Start writing ``stream``'s bytes."""
        with self._guard:
            if self._thread is None:
                self._start()
            self._streams[stream.fd] = stream
            stream.begun = True
            self._attention.add(stream)
        self._wake()

    def send(self, stream, data):
        """Write or queue ``data``; False (and the stream told to resync, then
        closed) if the subscriber has fallen too far behind."""
        with self._guard:
            if stream.closed or stream.closing:
                return False
            if len(stream.buffer) + len(data) > self.max_buffered:
                stream.buffer += sse_bytes("resync", {"reason": "too slow to keep up"})
                stream.closing = True
                self._attention.add(stream)
                self._wake()
                return False
            if stream.buffer or not stream.begun:
                stream.buffer += data  # behind what waits already
                return True
            try:
                sent = stream.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                sent = 0  # gone: the thread sees it when it tries again
            stream.last_sent = time.monotonic()
            if sent == len(data):
                return True
            stream.buffer += data[sent:]
            self._attention.add(stream)
        self._wake()
        return True

    def close(self, stream):
        """Close once what is queued is written (or at once if it cannot be)."""
        with self._guard:
            stream.closing = True
            if stream.begun:
                self._attention.add(stream)
        self._wake()

    def stop(self):
        self._stopping = True
        if self._thread is not None:
            self._wake()
            self._thread.join(5)

    def _wake(self):
        if self._thread is not None:
            self._waker.wake()

    # -- the loop ----------------------------------------------------------

    def _run(self):
        next_heartbeats = time.monotonic() + 1.0
        while not self._stopping:
            with self._guard:
                streams, self._attention = self._attention, set()
            now = time.monotonic()
            if now >= next_heartbeats:
                with self._guard:
                    streams |= set(self._streams.values())
                next_heartbeats = now + 1.0
            for stream in streams:
                self._visit(stream, now)
            for key, mask in self._selector.select(1.0):
                if key.data is None:
                    self._waker.drain()
                    continue
                if mask & selectors.EVENT_READ:
                    self._readable(key.data)
                if mask & selectors.EVENT_WRITE and not key.data.closed:
                    self._visit(key.data, time.monotonic())
        with self._guard:
            streams = list(self._streams.values())
        for stream in streams:
            self._shut(stream)

    def _visit(self, stream, now):
        """Heartbeat if due, write what waits, close if asked, and register
        the stream for what it needs now (its client's EOF; room to write)."""
        if stream.closed:
            return
        with self._guard:
            if not stream.buffer and now - stream.last_sent >= self.heartbeat_seconds:
                stream.buffer += b": heartbeat\n\n"
        self._flush(stream)
        if stream.closed:
            return
        wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if stream.buffer else 0)
        registered = self._registered
        if registered.get(stream.fd) != wanted:
            if stream.fd in registered:
                self._selector.modify(stream.fd, wanted, stream)
            else:
                self._selector.register(stream.fd, wanted, stream)
            registered[stream.fd] = wanted

    def _readable(self, stream):
        """A stream's client sends nothing after its request: data or EOF means it is done."""
        try:
            data = stream.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._shut(stream)

    def _flush(self, stream):
        failed = False
        with self._guard:  # one writer at a time: send() may write directly too
            if stream.buffer:
                try:
                    sent = stream.sock.send(stream.buffer)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:
                    sent, failed = 0, True
                if sent:
                    del stream.buffer[:sent]
                    stream.last_sent = time.monotonic()
            done = stream.closing and not stream.buffer
        if failed or done:
            self._shut(stream)

    def _shut(self, stream):
        with self._guard:
            if stream.closed:
                return
            stream.closed = True
            self._streams.pop(stream.fd, None)
        if self._registered.pop(stream.fd, None) is not None:
            self._selector.unregister(stream.fd)  # before its number can be reused
        try:
            stream.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        stream.sock.close()
        if stream.on_closed is not None:
            try:
                stream.on_closed()
            except Exception:
                logger.exception("a closed stream's listener failed")
