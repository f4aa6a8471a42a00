"""Atomic file writes: a reader sees the old file or the new one, never half.

Temp files start with ``.tmp-`` in the destination folder, so ``os.replace``
never crosses a file system; leftovers after a crash are safe to delete.
"""
import errno
import json
import os
import tempfile

from .base import StorageFull

TEMP_PREFIX = ".tmp-"

# Errors that mean "the disk will not take this write", not "we have a bug".
_DISK_REFUSED = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


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
    folder = os.path.dirname(path)
    try:
        fd, temp_path = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=folder)
        try:
            with os.fdopen(fd, "wb") as temp:
                temp.write(content)
                temp.flush()
                if fsync:
                    os.fsync(temp.fileno())
            os.replace(temp_path, path)
        except BaseException:
            _remove_quietly(temp_path)
            raise
        if fsync:
            fsync_folder(folder)
    except OSError as error:
        raise_if_disk_refused(error)
        raise


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


def _remove_quietly(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
