"""Atomic file writes: a reader sees the old file or the new one, never half.

Temp files start with ``.tmp-`` in the destination folder, so ``os.replace``
never crosses a file system; leftovers after a crash are safe to delete.
"""

import errno
import hashlib
import itertools
import json
import os
import threading

from .base import StorageFull
from .layout import TEMP_PREFIX

# Errors that mean "the disk will not take this write", not "we have a bug".
_DISK_REFUSED = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


# Test-only fault injection, for machines where a test cannot mount a small
# file system: while the file named by this environment variable exists,
# every storage write fails with the errno named in it ("ENOSPC", "EROFS");
# "ENOSPC after 3" lets the next 3 writes through first, so that a test can
# fail each step of a change in turn (docs/storage.md).
FAULT_FLAG_ENV = "KFS_TEST_DISK_FAULT_FILE"
_FAULT_FLAG = os.environ.get(FAULT_FLAG_ENV)
_fault_guard = threading.Lock()
_fault_seen = {"flag": None, "passed": 0}  # the flag as last read, and the writes let through


def check_injected_fault():
    if not _FAULT_FLAG:
        return
    try:
        with open(_FAULT_FLAG, encoding="ascii") as flag:
            content = flag.read().strip()
            changed = os.fstat(flag.fileno()).st_mtime_ns
    except FileNotFoundError:
        return
    name, _, after = content.partition(" after ")
    with _fault_guard:
        if _fault_seen["flag"] != (content, changed):
            _fault_seen.update(flag=(content, changed), passed=0)
        if after.strip().isdigit() and _fault_seen["passed"] < int(after):
            _fault_seen["passed"] += 1
            return
    code = getattr(errno, name, errno.ENOSPC)
    raise OSError(code, os.strerror(code))


def fsync_folder(folder):
    """Make a rename or a new file in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def dump_json(document):
    """The bytes we store for a JSON document: UTF-8, indented for people."""
    return (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def write_bytes(path, content, *, fsync=True):
    """Replace ``path`` with ``content`` atomically (owner-only permissions)."""
    temp_path = write_temp(path, content, fsync=fsync)
    try:
        os.replace(temp_path, path)
        if fsync:
            fsync_folder(os.path.dirname(path))
    except OSError as error:
        remove_quietly(temp_path)
        raise_if_disk_refused(error)
        raise


def write_temp(path, content, *, fsync=True):
    """``content`` in a new temp file beside ``path``, to be renamed over it; its name."""
    try:
        check_injected_fault()
        fd, temp_path = new_temp_file(os.path.dirname(path))
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        except BaseException:
            remove_quietly(temp_path)
            raise
        finally:
            os.close(fd)
    except OSError as error:
        raise_if_disk_refused(error)
        raise
    return temp_path


_temp_numbers = itertools.count()
# With the process id: two daemons in separate containers may both be pid 1.
_PROCESS_TOKEN = os.urandom(3).hex()


def own_temp_prefix():
    """How this process's temp files are named: ``.tmp-<pid>.<token>-``, then a counter."""
    return f"{TEMP_PREFIX}{os.getpid()}.{_PROCESS_TOKEN}-"


def new_temp_file(folder):
    """A new empty file in ``folder``, owner-only, opened for writing: (fd, path).

    Named by process id, a token drawn at start and a counter: unique among
    the living processes, half the cost of tempfile.mkstemp's random names (a
    record write makes two), and the file watcher knows this process's own
    renames by it.  A name left by a dead process is skipped."""
    prefix = own_temp_prefix()
    while True:
        temp_path = os.path.join(folder, f"{prefix}{next(_temp_numbers)}")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            return os.open(temp_path, flags, 0o600), temp_path
        except FileExistsError:
            continue


def write_json(path, document, *, fsync=True):
    write_bytes(path, dump_json(document), fsync=fsync)


def read_json(path):
    """The parsed document at ``path``, or None if there is no such file."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None


def raise_if_disk_refused(error):
    if error.errno in _DISK_REFUSED:
        raise StorageFull(os.strerror(error.errno)) from error


def remove_quietly(path):
    """Unlink ``path``; already gone is fine."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def sha256_of(path):
    """The hex SHA-256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
