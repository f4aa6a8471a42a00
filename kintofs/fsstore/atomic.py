"""Atomic file writes: a reader sees the old file or the new one, never half.

Temp files start with ``.tmp-`` in the destination folder, so ``os.replace``
never crosses a file system; leftovers after a crash are safe to delete.
"""

import errno
import json
import logging
import os
import shutil
import tempfile
import threading
import uuid

from .base import StorageFull
from .layout import OLD_PREFIX, TEMP_PREFIX

logger = logging.getLogger(__name__)

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
        fd, temp_path = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "wb") as temp:
                temp.write(content)
                temp.flush()
                if fsync:
                    os.fsync(temp.fileno())
        except BaseException:
            remove_quietly(temp_path)
            raise
    except OSError as error:
        raise_if_disk_refused(error)
        raise
    return temp_path


def write_json(path, document, *, fsync=True):
    write_bytes(path, dump_json(document), fsync=fsync)


def read_json(path):
    """The parsed document at ``path``, or None if there is no such file."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None


class FileSwap:
    """Replace or remove several files so that a refused write changes nothing.

    Everything that needs disk space happens in :meth:`stage` and
    :meth:`stage_removal`: new contents go to temp files, and the current
    files get a second name (a hard link, or a copy where links are not
    supported).  :meth:`apply` then only renames and unlinks, in the order
    staged.  Until :meth:`commit`, :meth:`undo` puts every old file back
    without needing any space, so a caller whose next step (the journal
    line) is refused can leave the folder exactly as it was.  Leftover
    ``.tmp-`` files after a crash are safe to delete, as always.
    """

    def __init__(self, *, fsync=True):
        self.fsync = fsync
        self._steps = []  # (path, temp file with the new content or None, backup or None)
        self._applied = []

    def stage(self, path, content):
        temp = self._new_temp(path, content)
        try:
            backup = self._backup(path)
        except BaseException:
            remove_quietly(temp)
            raise
        self._steps.append((path, temp, backup))

    def stage_removal(self, path):
        self._steps.append((path, None, self._backup(path)))

    def apply(self):
        for step in self._steps:
            path, temp, backup = step
            if temp is not None:
                os.replace(temp, path)
            elif backup is not None:
                os.unlink(path)
            self._applied.append(step)
            if self.fsync:
                fsync_folder(os.path.dirname(path))

    def undo(self):
        """Put back what :meth:`apply` changed and drop every temp file."""
        for path, temp, backup in reversed(self._applied):
            try:
                if backup is not None:
                    os.replace(backup, path)
                elif temp is not None:
                    remove_quietly(path)  # the file did not exist before
            except OSError:
                logger.error("could not put back %s after a refused write", path, exc_info=True)
        for _path, temp, backup in self._steps:
            for leftover in (temp, backup):
                if leftover is not None:
                    remove_quietly(leftover)
        self._steps, self._applied = [], []

    def commit(self):
        """Forget the old versions: the change is final."""
        for _path, _temp, backup in self._steps:
            if backup is not None:
                remove_quietly(backup)
        self._steps, self._applied = [], []

    def _new_temp(self, path, content):
        check_injected_fault()
        fd, temp_path = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "wb") as temp:
                temp.write(content)
                temp.flush()
                if self.fsync:
                    os.fsync(temp.fileno())
        except BaseException:
            remove_quietly(temp_path)
            raise
        return temp_path

    def _backup(self, path):
        """A second name for the current file (None when there is none)."""
        if not os.path.exists(path):
            return None
        backup = os.path.join(os.path.dirname(path), f"{OLD_PREFIX}{uuid.uuid4().hex}")
        try:
            os.link(path, backup)
        except OSError as error:
            if error.errno in _DISK_REFUSED:
                raise
            # No hard links on this file system (FAT, some network mounts): copy.
            with open(path, "rb") as f:
                return self._new_temp(path, f.read())
        return backup


# What os.link answers where a file system has no hard links (FAT, exFAT,
# some network and FUSE mounts) or will not give a file one more: a copy does.
_NO_HARD_LINKS = {
    errno.EPERM,
    errno.EACCES,
    errno.EOPNOTSUPP,
    errno.ENOTSUP,
    errno.ENOSYS,
    errno.EMLINK,
    errno.EXDEV,
}

COPY_CHUNK_BYTES = 1 << 20


def link_or_copy(path, second_name, *, fsync=True):
    """Give ``path``'s content the new name ``second_name``, leaving ``path`` as it is.

    A hard link where the file system has them (no space needed), else a copy.
    A disk that refuses the link (ENOSPC, EROFS, ...) is not asked for a copy.
    """
    try:
        os.link(path, second_name)
    except OSError as error:
        if error.errno not in _NO_HARD_LINKS:
            raise
        copy_file(path, second_name, fsync=fsync)


def copy_file(source, destination, *, fsync=True):
    """Copy ``source`` into the new file ``destination`` chunk by chunk (owner-only
    permissions); on any error nothing of ``destination`` is left."""
    check_injected_fault()
    with open(source, "rb") as original:
        fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as copy:
                shutil.copyfileobj(original, copy, COPY_CHUNK_BYTES)
                copy.flush()
                if fsync:
                    os.fsync(copy.fileno())
        except BaseException:
            remove_quietly(destination)
            raise


def raise_if_disk_refused(error):
    if error.errno in _DISK_REFUSED:
        raise StorageFull(os.strerror(error.errno)) from error


def remove_quietly(path):
    """Unlink ``path``; already gone is fine."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
