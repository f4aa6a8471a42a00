"""The append-only journal of one list: ``_journal.jsonl`` in the list folder.

One JSON object per line, in the order the writes happened::

    {"ts": 1795343847096, "op": "put", "id": "r1", "hash": "9f2c4e1a0b7d3e55"}
    {"ts": 1795343847097, "op": "delete", "id": "r1"}
    {"ts": 1795343847000, "op": "init"}

``put`` means the object file now holds the version stamped ``ts``, whose
files' bytes have the :func:`content_digest` ``hash`` (optional: lines
written by hand or by older versions have none); a load that finds other
bytes knows the files were edited since, even if ``last_modified`` was kept.
``delete`` leaves a tombstone stamped ``ts``, and ``init`` only records the
list timestamp a reader saw before anything was written.  The list timestamp
is the largest ``ts`` in the file.

A write's ``ts`` is the wall time it was made, give or take a moment.  Where
it is not (a client forced an older ``last_modified``, a compaction, a
replayed commit), the last line written also gets ``"at"``, the wall time
in ms: so a journal whose ctime is much later than every ``ts`` and ``at``
in it was written by someone else, as a restore of an older copy does
(:func:`rewritten_by_others`).

Only holders of the list lock append.  A crash can leave a last line without
its newline; readers skip it and the next writer cuts it off first.
"""

import hashlib
import json
import os
import time

from .atomic import check_injected_fault, fsync_folder, raise_if_disk_refused, write_bytes
from .layout import JOURNAL_NAME


def is_timestamp(value):
    # Kinto accepts any integer a client forces, negative ones included.
    return isinstance(value, int) and not isinstance(value, bool)


def parse_line(line):
    """The entry of one journal line, or None if it is not one.

    The one validator of journal lines: the daemon skips what it refuses,
    and ``kintofs check`` reports it.
    """
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict) or not is_timestamp(entry.get("ts")):
        return None
    if entry.get("op") == "init":
        return entry
    if entry.get("op") in ("put", "delete") and isinstance(entry.get("id"), str):
        return entry
    return None


# How long after a line's time its journal may still be changed by its own
# append (a commit waits for the commit log's fsync, possibly behind others').
APPEND_SLACK_MS = 5_000


def wall_ms():
    return time.time_ns() // 1_000_000


def stamped(entries):
    """``entries``, the last one with ``at`` if its ``ts`` is not about now."""
    if not entries:
        return entries
    now = wall_ms()
    if abs(now - entries[-1]["ts"]) <= APPEND_SLACK_MS // 2:
        return entries
    return [*entries[:-1], dict(entries[-1], at=now)]


def last_written(entries):
    """The latest ``ts`` or ``at`` of ``entries``: when kintofs last wrote them, None if empty."""
    return max((max(entry["ts"], entry.get("at", 0)) for entry in entries), default=None)


def rewritten_by_others(written, identity):
    """True if the journal (its ``identity``, and the :func:`last_written` of
    its lines) was changed after the last time kintofs wrote it: a restore,
    `tar -x`, `git checkout`, a copy to another disk (ctime is set by the
    kernel; no tool sets it back)."""
    if written is None or identity is None:
        return False
    return identity[2] // 1_000_000 > written + APPEND_SLACK_MS


def content_digest(data_bytes, acl_bytes):
    """A short hash of an object's two files as they are on disk (b"" for a missing one).

    Not a security measure: it only tells "these are the bytes we wrote"
    from "someone changed them", so 64 bits are plenty.
    """
    return hashlib.blake2b(data_bytes + b"\0" + acl_bytes, digest_size=8).hexdigest()


def cut_torn_tail(f):
    """Drop a last line that a crash left without its newline (``f``: open "rb+"/"ab+")."""
    size = f.seek(0, os.SEEK_END)
    if size == 0:
        return
    f.seek(size - 1)
    if f.read(1) == b"\n":
        return
    f.seek(0)
    content = f.read()
    f.truncate(content.rfind(b"\n") + 1)
    f.seek(0, os.SEEK_END)


def parse(chunk):
    """``(entries, length)`` of the complete lines at the start of ``chunk``
    (a torn last line is left out of both)."""
    complete = chunk[: chunk.rfind(b"\n") + 1]
    # A damaged line is skipped here; `kintofs check` reports it.
    entries = [entry for entry in map(parse_line, complete.splitlines()) if entry is not None]
    return entries, len(complete)


# Journal.read_on looks this far back for the line it checks (lines are a few
# hundred bytes at most; a longer one only costs a reload).
LINE_WINDOW = 4096


def last_line(data, end=None):
    """The last complete line of ``data[:end]``, newline included (b"" if none)."""
    end = len(data) if end is None else end
    return data[data.rfind(b"\n", 0, max(end - 1, 0)) + 1 : end]


def line_hash(data, end=None):
    """A hash of the last complete line of ``data[:end]`` (0 if none): what a
    list keeps of the line it read up to (see Journal.read_on), in 32 bytes."""
    return hash(last_line(data, end))


def latest_lines(entries, latest=None, timestamp=None):
    """``(latest, timestamp)`` once ``entries`` are read on top of ``latest``
    (id -> its latest put or delete line) and the list ``timestamp``."""
    latest = {} if latest is None else latest
    for entry in entries:
        timestamp = entry["ts"] if timestamp is None else max(timestamp, entry["ts"])
        if entry["op"] != "init":
            latest[entry["id"]] = entry
    return latest, timestamp


def encode(entries):
    return b"".join(json.dumps(entry, separators=(",", ":")).encode() + b"\n" for entry in entries)


class Journal:
    __slots__ = ("folder", "fsync")

    def __init__(self, folder, *, fsync=True):
        self.folder = folder
        self.fsync = fsync

    @property
    def path(self):
        # Not kept: a daemon holds thousands of journals, the folder string is shared.
        return os.path.join(self.folder, JOURNAL_NAME)

    def identity(self):
        """``(inode, size, ctime)`` of the file, or None when it does not exist.

        Any change by any process changes this: appends grow the size, and a
        compaction replaces the file (new inode).  ctime tells a file
        rewritten in place (`cp -a`) or replaced by one that got the same
        inode number (`git checkout`, `tar -x`: unlink, then create) from a
        stat taken before an append of ours.
        """
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (status.st_ino, status.st_size, status.st_ctime_ns)

    def read(self, offset=0):
        """``(entries, end)``: complete lines from ``offset``, and where they end."""
        try:
            with open(self.path, "rb") as f:
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            return [], 0
        entries, length = parse(chunk)
        return entries, offset + length

    def read_on(self, offset, known_line_hash):
        """``(entries, end, its line_hash)`` of the complete lines after
        ``offset``, or None if the line before it does not have
        ``known_line_hash`` (the :func:`line_hash` of what was read up to it).

        A file that only grew has the same line there.  One written anew (a
        compaction by another process, a restore) may have got the inode and
        a larger size: it has another line there, as line timestamps never repeat.
        """
        start = max(0, offset - LINE_WINDOW)
        try:
            with open(self.path, "rb") as f:
                f.seek(start)
                chunk = f.read()
        except FileNotFoundError:
            return None
        before = offset - start
        line = last_line(chunk, before)
        whole = start == 0 or len(line) < before  # else longer than the window: unknown
        if len(chunk) < before or not whole or hash(line) != known_line_hash:
            return None
        entries, length = parse(chunk[before:])
        return entries, offset + length, line_hash(chunk, before + length)

    def read_bytes(self):
        """The whole file as it is (b"" when there is none)."""
        try:
            with open(self.path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""

    def append(self, entries, *, durable=True):
        """Append ``entries`` (caller holds the list lock), durably unless
        ``durable`` is False (a commit whose log already holds them); returns
        the bytes appended."""
        durable = durable and self.fsync
        try:
            check_injected_fault()
            is_new = not os.path.exists(self.path)
            with open(self.path, "ab+") as f:
                cut_torn_tail(f)
                written = encode(stamped(entries))
                f.write(written)
                f.flush()
                if durable:
                    os.fsync(f.fileno())
            if durable and is_new:
                fsync_folder(os.path.dirname(self.path))
        except OSError as error:
            raise_if_disk_refused(error)
            raise
        return written

    def rewrite(self, entries):
        """Replace the whole journal (compaction; caller holds the lock);
        returns its bytes."""
        written = encode(stamped(entries))
        write_bytes(self.path, written, fsync=self.fsync)
        return written
