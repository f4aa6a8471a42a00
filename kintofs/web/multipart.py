"""A bounded, streaming ``multipart/form-data`` reader (for file uploads).

Nothing is buffered beyond one read chunk: each part's body goes to a sink
the caller chooses per part (a temp file for a file, a capped buffer for a
form field).  The reader never reads more than the request's
``Content-Length``, or ``max_body + 1`` bytes of a chunked body, so a client
cannot make it read, keep or write without limit.
"""

import email.message
import re

CHUNK = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024

_BOUNDARY = re.compile(r'boundary="?([^";]{1,200})"?', re.IGNORECASE)


class MultipartError(ValueError):
    """The body is not well-formed multipart data; the message says why."""


class LengthReached(MultipartError):
    """All ``length`` bytes were read and the closing delimiter was not among them."""


class Part:
    """One part's headers: its form ``name``, ``filename`` (None for a field) and type."""

    def __init__(self, raw_headers):
        message = email.message.Message()
        for line in raw_headers.decode("utf-8", "replace").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                message[name.strip()] = value.strip()
        self.name = message.get_param("name", header="content-disposition")
        filename = message.get_filename()  # handles RFC 2231 filename*=
        self.filename = filename if isinstance(filename, str) else None
        self.content_type = message.get("content-type")


def boundary_of(content_type):
    """The boundary of a ``multipart/form-data`` Content-Type, or None."""
    if not content_type or content_type.split(";")[0].strip().lower() != "multipart/form-data":
        return None
    found = _BOUNDARY.search(content_type)
    return found.group(1).encode("latin-1", "replace") if found else None


def read_parts(stream, boundary, length, open_sink):
    """Feed each part's body to ``open_sink(part)``'s ``write``; return when the
    closing delimiter is read.  ``length`` is the most the stream may yield."""
    reader = _Reader(stream, length)
    delimiter = b"\r\n--" + boundary
    # The first delimiter may start the body (no preamble, so no leading CRLF).
    reader.buffer = b"\r\n"
    reader.skip_past(delimiter)
    while True:
        ending = reader.take(2)
        if ending == b"--":
            return
        if ending != b"\r\n":
            raise MultipartError("malformed part delimiter")
        part = Part(reader.take_until(b"\r\n\r\n", MAX_HEADER_BYTES))
        sink = open_sink(part)
        reader.copy_until(delimiter, sink.write)


class _Reader:
    def __init__(self, stream, length):
        self.stream, self.left, self.buffer = stream, length, b""

    def _fill(self):
        if self.left <= 0:
            raise LengthReached("the body ends before the closing delimiter")
        chunk = self.stream.read(min(CHUNK, self.left))
        if not chunk:
            raise MultipartError("the body ends before the closing delimiter")
        self.left -= len(chunk)
        self.buffer += chunk

    def take(self, size):
        while len(self.buffer) < size:
            self._fill()
        taken, self.buffer = self.buffer[:size], self.buffer[size:]
        return taken

    def take_until(self, marker, limit):
        while marker not in self.buffer:
            if len(self.buffer) > limit:
                raise MultipartError("part headers too long")
            self._fill()
        taken, _, self.buffer = self.buffer.partition(marker)
        return taken

    def skip_past(self, marker):
        self.copy_until(marker, lambda data: None)

    def copy_until(self, marker, write):
        """Pass on the bytes before ``marker`` as they arrive; drop the marker."""
        while True:
            found = self.buffer.find(marker)
            if found >= 0:
                write(self.buffer[:found])
                self.buffer = self.buffer[found + len(marker) :]
                return
            # Keep what could be the start of a marker split across reads.
            keep = len(marker) - 1
            if len(self.buffer) > keep:
                write(self.buffer[:-keep])
                self.buffer = self.buffer[-keep:]
            self._fill()
