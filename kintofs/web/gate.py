"""Read each request whole before it takes a worker thread.

cheroot hands a connection to one of its ``threads`` workers as soon as it is
readable, and the worker then reads the request line, headers and body with
blocking reads whose timeout starts again at every byte: ten clients that
send a byte every few seconds would own the whole server.

:class:`GatedServer` puts a gate in front of the workers.  One thread
multiplexes every connection whose request is still arriving (``selectors``,
epoll on Linux), buffering it without ever blocking: the request line and
headers within ``request_header_timeout_seconds`` and the size caps below,
the body within ``request_body_timeout_seconds`` plus one second for each
``request_body_min_rate_bytes`` received (mod_reqtimeout's rule).  Only a
complete request goes to a worker, which reads it from memory (or from a
spool file for a large body) and never waits on the client.  A client that
is slow, idle or half-way through its request thus costs a file descriptor
and its buffer, not a thread.

What a connection has ready when it is handed to the gate is read at once,
without blocking, on the thread that hands it (cheroot's selector loop, or
the worker that kept the connection alive): a request that has arrived
whole, as most do, goes straight on to a worker, without a trip through the
gate's thread and its selector (about a tenth of what a small GET costs).

The gate only frames requests (where the head ends, how long the body is);
cheroot still parses them, from the replayed bytes.  Where the gate refuses
a request it answers with Kinto's JSON error and closes the connection.
"""

import _pyio  # what cheroot's socket files are built on
import io
import json
import logging
import re
import selectors
import socket
import tempfile
import threading
import time
from collections import deque

from cheroot import wsgi
from cheroot.makefile import StreamReader

from ..waker import Waker
from . import errors
from .app import SECURITY_HEADERS

logger = logging.getLogger(__name__)

MAX_REQUEST_LINE_BYTES = 8 * 1024  # longer: 414
MAX_HEADER_BYTES = 64 * 1024  # all header lines together, longer: 431
MAX_CHUNK_LINE_BYTES = 4 * 1024  # a chunk-size line with its extensions
SPOOL_IN_MEMORY_BYTES = 64 * 1024  # a body beyond this waits in a temp file
RECV_BYTES = 64 * 1024
SWEEP_SECONDS = 0.25  # how often deadlines are checked

CRLF = b"\r\n"
HTTP_VERSION = re.compile(rb"HTTP/(\d)\.(\d)")
# len() of Content-Length, Transfer-Encoding and Expect: the names the framing reads.
_FRAMING_NAME_LENGTHS = frozenset(
    len(name) for name in (b"expect", b"content-length", b"transfer-encoding")
)


class Limits:
    """The gate's deadlines and the largest body it buffers."""

    def __init__(self, header_timeout, body_timeout, body_min_rate, max_body_bytes):
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.body_min_rate = body_min_rate
        self.max_body_bytes = max_body_bytes

    @classmethod
    def from_settings(cls, settings, max_body_bytes):
        return cls(
            settings["request_header_timeout_seconds"],
            settings["request_body_timeout_seconds"],
            settings["request_body_min_rate_bytes"],
            max_body_bytes,
        )


class Refused(Exception):
    """A request the gate answers itself (status, errno, message)."""

    def __init__(self, status, errno, message):
        super().__init__(message)
        self.status, self.errno, self.message = status, errno, message


def error_bytes(status, errno, message):
    """A complete ``Connection: close`` response carrying Kinto's JSON error."""
    body = json.dumps(
        {"code": status, "errno": errno, "error": REASONS[status], "message": message},
        separators=(",", ":"),
    ).encode()
    head = [
        f"HTTP/1.1 {status} {REASONS[status]}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    head += [f"{name}: {value}" for name, value in SECURITY_HEADERS.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


REASONS = {
    **errors.REASONS,
    408: "Request Timeout",
    414: "Request-URI Too Long",
    431: "Request Header Fields Too Large",
}


# ---------------------------------------------------------------- framing


class Framing:
    """Where one request ends, fed its bytes as they arrive.

    ``feed(data)`` returns how many of ``data``'s bytes belong to this
    request (the rest is the next, pipelined request) or raises
    :class:`Refused`.  ``head`` is the request line and headers as cheroot
    must see them, ``complete`` says the body has arrived too.
    """

    def __init__(self, max_body_bytes):
        self.max_body_bytes = max_body_bytes
        self.head = None
        self.complete = False
        self.expects_continue = False
        self.body_received = 0  # bytes of the body as sent (chunk framing included)
        self._pending = bytearray()  # the head so far, then a partial chunk line
        self._scanned = 0  # bytes of the head checked for bare LFs
        self._line_end = None  # where the request line ends, once seen
        self._remaining = 0  # body bytes still to come (length) or of this chunk
        self._state = "head"  # head, length, size, data, data-crlf, trailer
        self._chunked_total = 0
        self.trailer_bytes = 0  # trailer lines, which cheroot would leave unread

    def feed(self, data):
        if self._state == "head":
            return self._feed_head(data)
        return self._feed_body(data, 0)

    # -- the request line and headers ------------------------------------

    def _feed_head(self, data):
        pending = self._pending
        start = len(pending)
        pending += data
        if pending.startswith(CRLF):
            del pending[:2]  # an empty line before a request is ignored (RFC 9112 2.2)
            start = self._scanned = 0
        end = pending.find(b"\r\n\r\n", max(0, start - 3))
        self._scan_line_ends(pending, len(pending) if end < 0 else end + 4)
        if end < 0:
            line_end = self._line_end
            if (line_end is None and len(pending) > MAX_REQUEST_LINE_BYTES + 1) or (
                line_end is not None and line_end > MAX_REQUEST_LINE_BYTES
            ):
                raise Refused(
                    414,
                    errors.REQUEST_TOO_LARGE,
                    f"The request line is longer than {MAX_REQUEST_LINE_BYTES} bytes.",
                )
            if line_end is not None and len(pending) - line_end - 2 > MAX_HEADER_BYTES:
                raise Refused(
                    431,
                    errors.REQUEST_TOO_LARGE,
                    f"The request headers are larger than {MAX_HEADER_BYTES} bytes.",
                )
            return len(data)
        head = bytes(pending[: end + 2])
        rest = len(pending) - (end + 4)  # bytes of data beyond the head
        used = len(data) - rest
        self._pending = bytearray()
        self._parse_head(head)
        if self._state == "length" and self._remaining == 0:
            self.complete = True
        if self.complete or rest == 0:
            return used
        return self._feed_body(data, used)

    def _scan_line_ends(self, pending, stop):
        """Every LF of the head must end a CRLF, as cheroot requires: else answer now.

        Scans each byte once, however the head is cut into reads; notes where
        the request line ends.
        """
        if self._scanned == 0 and pending.count(b"\n", 0, stop) == pending.count(CRLF, 0, stop):
            # The usual case, a head read from its start: every LF is a CRLF's.
            if self._line_end is None and (first := pending.find(b"\n", 0, stop)) >= 0:
                self._line_end = first - 1
            self._scanned = stop
            return
        position = pending.find(b"\n", self._scanned, stop)
        while position >= 0:
            if position == 0 or pending[position - 1] != 13:
                raise Refused(400, errors.UNDEFINED, "HTTP requires CRLF line endings.")
            if self._line_end is None:
                self._line_end = position - 1
            position = pending.find(b"\n", position + 1, stop)
        self._scanned = stop

    def _parse_head(self, head):
        line_end = head.find(CRLF)
        if line_end > MAX_REQUEST_LINE_BYTES:
            raise Refused(
                414,
                errors.REQUEST_TOO_LARGE,
                f"The request line is longer than {MAX_REQUEST_LINE_BYTES} bytes.",
            )
        if len(head) - line_end > MAX_HEADER_BYTES:
            raise Refused(
                431,
                errors.REQUEST_TOO_LARGE,
                f"The request headers are larger than {MAX_HEADER_BYTES} bytes.",
            )
        request_line, lines = head[:line_end], head[line_end + 2 : -2].split(CRLF)
        version = HTTP_VERSION.fullmatch(request_line.rpartition(b" ")[2])
        # cheroot answers 1.1 to 1.1 and later, and reads chunked bodies only then.
        chunked_allowed = bool(version) and (int(version[1]), int(version[2])) >= (1, 1)
        lengths, codings, kept = set(), [], [request_line]
        forced_close = False
        for line in lines:
            name, colon, value = line.partition(b":")
            # (A line folded onto the previous one, starting with SP or HTAB,
            # has a name starting with white space.)
            if not colon or not name or name != name.strip():
                raise Refused(400, errors.UNDEFINED, "Malformed header line.")
            if len(name) in _FRAMING_NAME_LENGTHS:
                key, value = name.lower(), value.strip()
                if key == b"content-length":
                    lengths.add(value)
                elif key == b"transfer-encoding":
                    codings += [c.strip().lower() for c in value.split(b",") if c.strip()]
                elif key == b"expect" and value.lower() == b"100-continue":
                    self.expects_continue = True
                    continue  # the gate answers it; cheroot must not answer again
            kept.append(line)
        if not version:
            forced_close = True  # cheroot refuses the request line before any body
        elif codings and chunked_allowed:
            if any(c != b"chunked" for c in codings):
                forced_close = True  # cheroot answers 501 before reading the body
            else:
                self._state = "size"
        else:
            length = self._content_length(lengths)
            if length > self.max_body_bytes:
                # The app refuses it (413) from the header alone: hand the head over
                # now and close afterwards, so nobody waits for the body.
                forced_close = True
            else:
                self._state, self._remaining = "length", length
        if forced_close:
            self.complete, self.expects_continue = True, False
            kept = [line for line in kept if not line.lower().startswith(b"connection:")]
            kept.append(b"Connection: close")
        self.head = CRLF.join(kept) + CRLF + CRLF

    @staticmethod
    def _content_length(values):
        if not values:
            return 0
        if len(values) > 1:
            raise Refused(400, errors.UNDEFINED, "Conflicting Content-Length headers.")
        (value,) = values
        if not value.isdigit() or len(value) > 19:
            raise Refused(400, errors.UNDEFINED, "Malformed Content-Length header.")
        return int(value)

    # -- the body ----------------------------------------------------------

    def _feed_body(self, data, offset):
        """Consume body bytes of ``data[offset:]``; returns the count used including offset."""
        position, size = offset, len(data)
        while position < size and not self.complete:
            if self._state == "length":
                taken = min(self._remaining, size - position)
                position += taken
                self._remaining -= taken
                self.complete = self._remaining == 0
            elif self._state == "data":
                taken = min(self._remaining, size - position)
                position += taken
                self._remaining -= taken
                if self._remaining == 0:
                    self._state = "data-crlf"
            else:  # a line: chunk size, the CRLF after a chunk, or a trailer
                end = data.find(b"\n", position)
                stop = size if end < 0 else end + 1
                self._pending += data[position:stop]
                position = stop
                if len(self._pending) > MAX_CHUNK_LINE_BYTES:
                    raise Refused(400, errors.UNDEFINED, "Chunk line too long.")
                if end >= 0:
                    line, self._pending = bytes(self._pending), bytearray()
                    self._end_of_line(line)
        self.body_received += position - offset
        return position

    def _end_of_line(self, line):
        if not line.endswith(CRLF):
            raise Refused(400, errors.UNDEFINED, "HTTP requires CRLF line endings.")
        if self._state == "data-crlf":
            if line != CRLF:
                raise Refused(400, errors.UNDEFINED, "Bad chunked transfer coding.")
            self._state = "size"
        elif self._state == "trailer":
            self.complete = line == CRLF
            if not self.complete:
                self.trailer_bytes += len(line)
        else:
            size_text = line[:-2].split(b";", 1)[0].strip()
            if (
                not size_text
                or len(size_text) > 16
                or not all(c in b"0123456789abcdefABCDEF" for c in size_text)
            ):
                raise Refused(400, errors.UNDEFINED, "Bad chunked transfer size.")
            chunk = int(size_text, 16)
            if chunk == 0:
                self._state = "trailer"
                return
            self._chunked_total += chunk
            if self._chunked_total > self.max_body_bytes:
                raise Refused(
                    413,
                    errors.REQUEST_TOO_LARGE,
                    f"Request body is larger than {self.max_body_bytes} bytes.",
                )
            self._state, self._remaining = "data", chunk


# ---------------------------------------------------------------- replay


class _ReplayIO(_pyio.RawIOBase):
    """What the gate buffered, then the socket (for whatever comes later)."""

    def __init__(self, sources, sock):
        self._sources = deque(sources)
        self._socket = socket.SocketIO(sock, "rb")

    def readable(self):
        return True

    def pending(self):
        for source in self._sources:
            if source.pending():
                return True
        return False

    def take_pending(self):
        """Every buffered byte not read yet (the start of a pipelined request)."""
        data = b"".join(source.read_rest() for source in self._sources)
        self._close_sources()
        return data

    def replay(self, sources):
        """Read ``sources`` next, then the socket again."""
        self._close_sources()
        self._sources.extend(sources)

    def readinto(self, buffer):
        while self._sources:
            count = self._sources[0].readinto(buffer)
            if count:
                return count
            self._sources.popleft().close()
        return self._socket.readinto(buffer)

    def _close_sources(self):
        while self._sources:
            self._sources.popleft().close()

    def close(self):
        self._close_sources()
        self._socket.close()
        super().close()


class _Bytes:
    """Bytes in memory, read once from the start (a :class:`_Source` without a file)."""

    def __init__(self, data):
        self._data, self._offset = data, 0

    def pending(self):
        return self._offset < len(self._data)

    def readinto(self, buffer):
        start = self._offset
        count = min(len(buffer), len(self._data) - start)
        if count <= 0:
            return 0
        buffer[:count] = self._data[start : start + count]
        self._offset = start + count
        return count

    def read_rest(self):
        data = self._data[self._offset :]
        self._offset = len(self._data)
        return data

    def close(self):
        pass


class _Source:
    """A buffered file of known size, read once from the start."""

    def __init__(self, file, size):
        self._file, self._left = file, size
        file.seek(0)

    def pending(self):
        return self._left > 0

    def readinto(self, buffer):
        if self._left <= 0:
            return 0
        view = memoryview(buffer)[: self._left]
        count = self._file.readinto(view)
        self._left -= count
        return count

    def read_rest(self):
        data = self._file.read(self._left) if self._left > 0 else b""
        self._left = 0
        return data

    def close(self):
        self._file.close()


class ReplayReader(StreamReader):
    """cheroot's socket reader, reading the gate's buffer first."""

    def __init__(self, sources, sock, bufsize=io.DEFAULT_BUFFER_SIZE):
        _pyio.BufferedReader.__init__(self, _ReplayIO(sources, sock), bufsize)
        self.bytes_read = 0

    def has_data(self):
        return len(self._read_buf) > self._read_pos or self._raw.pending()

    def take_pending(self):
        if not self.has_data():
            return b""  # the usual case: the last request was read to its end
        buffered = bytes(self._read_buf[self._read_pos :])
        self._read_buf, self._read_pos = b"", 0
        return buffered + self.raw.take_pending()

    def replay(self, sources):
        """Read ``sources`` next: the next request of the connection, once
        :meth:`take_pending` has taken what was left of this one."""
        self._read_buf, self._read_pos = b"", 0
        self.raw.replay(sources)
        self.bytes_read = 0  # per request, as with a new reader


# ---------------------------------------------------------------- the gate


class _Arrival:
    """One connection whose request is still arriving."""

    def __init__(self, conn, fd, limits, now):
        self.conn = conn
        self.fd = fd
        self.framing = Framing(limits.max_body_bytes)
        self.started = now
        self.body_started = None
        self.received_any = False
        self.spool = None
        self.spooled = 0
        self.extra = b""  # bytes of the next request, read along with this one
        self.registered = False  # in the gate's selector (the gate thread's alone then)
        self.finished = False  # handed to a worker, refused or dropped

    def deadline(self, limits):
        if self.body_started is None:
            return self.started + limits.header_timeout
        rate = limits.body_min_rate
        grace = self.framing.body_received / rate if rate else float("inf")
        return self.body_started + limits.body_timeout + grace

    def take(self, data):
        """Account for bytes read from the client: head, body, or the next request."""
        self.received_any = True
        framing = self.framing
        body_before = framing.body_received
        used = framing.feed(data)
        if self.body_started is None and framing.head is not None:
            self.body_started = time.monotonic()
        body = framing.body_received - body_before  # the last bytes of data[:used]
        if body:
            if self.spool is None:
                self.spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)
            self.spool.write(data[used - body : used])
            self.spooled += body
        self.extra = data[used:]
        if framing.complete and framing.trailer_bytes:
            # cheroot stops reading at the last chunk, and the next request
            # would begin with the trailer lines: replay none of them.
            self.spool.seek(self.spooled - framing.trailer_bytes - 2)
            self.spool.truncate()
            self.spool.write(CRLF)
            self.spooled -= framing.trailer_bytes

    def sources(self):
        sources = [_Bytes(self.framing.head)]
        if self.spool is not None:
            sources.append(_Source(self.spool, self.spooled))
        if self.extra:
            sources.append(_Bytes(self.extra))
        return sources

    def discard(self):
        if self.spool is not None:
            self.spool.close()


class RequestGate:
    """The thread that gathers requests; ``hand_over(conn)`` gets the complete ones."""

    def __init__(self, limits, hand_over):
        self.limits = limits
        self.hand_over = hand_over
        self._selector = selectors.DefaultSelector()
        self._arrivals = {}  # socket fd -> _Arrival
        self._admitted = deque()  # from other threads, taken by the gate's own
        self._waker = Waker(self._selector)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="kintofs-gate", daemon=True)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stopping = True
        self._waker.wake()
        self._thread.join(5)

    def __len__(self):
        return len(self._arrivals)

    def admit(self, conn):
        """Take ``conn`` (from any thread) until its next request has arrived.

        What it has ready is read now, on the calling thread, without blocking
        (see the module doc); only a request still arriving waits in the gate.
        """
        if self._stopping:
            conn.close()
            return
        arrival = self._arrival(conn)
        if arrival is None:
            return
        buffered = _take_buffered(conn.rfile)
        if buffered:
            self._received(arrival, buffered)
        if not arrival.finished:
            self._readable(arrival)  # nothing there yet: the gate waits for it
        if arrival.finished:
            return
        self._admitted.append(arrival)
        self._waker.wake()

    # -- the loop (gate thread) -------------------------------------------

    def _run(self):
        next_sweep = time.monotonic() + SWEEP_SECONDS
        while not self._stopping:
            for key, _ in self._selector.select(SWEEP_SECONDS):
                if key.data is None:
                    self._waker.drain()
                else:
                    self._readable(key.data)
            while self._admitted:
                self._start(self._admitted.popleft())
            now = time.monotonic()
            if now >= next_sweep:
                self._sweep(now)
                next_sweep = now + SWEEP_SECONDS
        for arrival in list(self._arrivals.values()):
            self._drop(arrival)
        while self._admitted:
            self._drop(self._admitted.popleft())

    def _arrival(self, conn):
        """The arrival of ``conn``'s next request (any thread), or None if its socket failed."""
        try:
            conn.socket.setblocking(False)
            fd = conn.socket.fileno()
        except OSError:
            conn.close()
            return None
        return _Arrival(conn, fd, self.limits, time.monotonic())

    def _start(self, arrival):
        """Wait for the rest of ``arrival`` (gate thread)."""
        if arrival.finished:
            return
        self._arrivals[arrival.fd] = arrival
        self._selector.register(arrival.fd, selectors.EVENT_READ, arrival)
        arrival.registered = True

    def _readable(self, arrival):
        try:
            data = arrival.conn.socket.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client is done sending (it may still read an answer)
            if arrival.received_any:
                self._refuse(
                    arrival, 400, errors.UNDEFINED, "The request ended before it was complete."
                )
            else:
                self._drop(arrival)
            return
        self._received(arrival, data)

    def _received(self, arrival, data):
        try:
            arrival.take(data)
        except Refused as refusal:
            self._refuse(arrival, refusal.status, refusal.errno, refusal.message)
            return
        framing = arrival.framing
        if framing.expects_continue:
            framing.expects_continue = False
            self._send_quietly(arrival, b"HTTP/1.1 100 Continue\r\n\r\n")
        if framing.complete:
            self._release(arrival)

    def _sweep(self, now):
        for arrival in [a for a in self._arrivals.values() if a.deadline(self.limits) <= now]:
            if not arrival.received_any:
                self._drop(arrival)  # an idle connection: nothing to answer
            elif arrival.body_started is None:
                self._refuse(
                    arrival, 408, errors.UNDEFINED, "The request headers did not arrive in time."
                )
            else:
                self._refuse(arrival, 408, errors.UNDEFINED, "The request body arrived too slowly.")

    def _release(self, arrival):
        """Give a complete request to a worker, with its bytes ready to read."""
        conn = self._forget(arrival)
        if conn is None:
            return
        try:
            conn.socket.settimeout(conn.server.timeout)
        except OSError:
            arrival.discard()
            conn.close()
            return
        if isinstance(conn.rfile, ReplayReader):
            # A kept-alive connection: its reader serves the next request too
            # (admit() took what it held), cheaper than a new one each time.
            conn.rfile.replay(arrival.sources())
        else:
            replaced, conn.rfile = (
                conn.rfile,
                ReplayReader(arrival.sources(), conn.socket, conn.rbufsize),
            )
            replaced.close()  # its socket reference, or the socket's close would wait for it
        self.hand_over(conn)

    def _refuse(self, arrival, status, errno, message):
        logger.info("refused a request from %s: %s %s", arrival.conn.remote_addr, status, message)
        self._send_quietly(arrival, error_bytes(status, errno, message))
        self._drop(arrival)

    @staticmethod
    def _send_quietly(arrival, data):
        try:
            arrival.conn.socket.send(data)  # small: fits the socket buffer, or is lost
        except OSError:
            pass

    def _drop(self, arrival):
        conn = self._forget(arrival)
        arrival.discard()
        if conn is not None:
            conn.close()

    def _forget(self, arrival):
        """The connection of ``arrival``, out of the gate; None if it left already."""
        if arrival.finished:
            return None
        arrival.finished = True
        if arrival.registered:  # only ever on the gate thread
            del self._arrivals[arrival.fd]
            self._selector.unregister(arrival.fd)
            arrival.registered = False
        return arrival.conn


def _take_buffered(rfile):
    """Bytes a connection's reader holds already (a pipelined request), without blocking."""
    if isinstance(rfile, ReplayReader):
        return rfile.take_pending()
    if rfile.has_data():
        return rfile.read1(RECV_BYTES)
    return b""


class GatedServer(wsgi.Server):
    """cheroot's WSGI server, with a :class:`RequestGate` before its workers."""

    def __init__(self, bind_addr, app, limits, **kwargs):
        # cheroot listens with a backlog of 5: a burst of six new connections
        # would see SYNs dropped and wait a second for the retry.
        kwargs.setdefault("request_queue_size", 1024)
        super().__init__(bind_addr, app, **kwargs)
        self.gate = RequestGate(limits, hand_over=super().process_conn)

    def prepare(self):
        super().prepare()
        self.gate.start()

    def process_conn(self, conn):
        """cheroot calls this for each connection with a request to read."""
        self.gate.admit(conn)

    def stop(self):
        """Stop accepting, finish the requests workers hold, drop those still arriving."""
        self.gate.stop()
        super().stop()
