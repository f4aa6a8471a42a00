"""``kintofs backup`` and ``kintofs restore``: copies that a daemon can keep writing during.

A backup copies one list at a time.  While a list's files (its journal, its
objects' data and ACL files) are read into memory, the list's ``_lock`` is
held, so the copy shows the list between two writes, journal and files in
agreement.  Only writes to that one list wait, and only for as long as the
reading takes; the copy is then written out with no lock held.  Lists are
copied parents first, and only the containers present in the parent's copy
are descended into, so the backup never holds a collection whose bucket it
lacks.  Each list is a snapshot of its own moment: a write that lands during
the backup may be in it or not, but never half of it.

The result is a folder, or a ``.tar.gz`` when the destination ends so.  It
appears under its final name only once complete.  It includes
``_userid_hmac_secret`` (without it, every user id would change): keep
backups as private as the data directory.  Lock files, temp files and trash
are not copied.

Both commands fill a hidden staging folder beside their target (see
"beside the data directory" in layout.py) and hold the ``flock`` of its
``_lock`` file while they live.  A killed one leaves its staging folder
behind with that lock free, which is how the next run to the same target
knows it is safe to remove; a running one keeps its lock, so it is never
touched.
"""

import ctypes
import fcntl
import os
import shutil
import tarfile
import time
import uuid

from .atomic import fsync_folder, read_json, remove_quietly
from .base import ParentNotFound
from .layout import (
    BACKUP_STAGING,
    FORMAT,
    FORMAT_FILE,
    KIND_OF_PLURAL,
    LOCK_NAME,
    MOVED_ASIDE,
    RESTORE_STAGING,
    STAGING_TOKEN_LENGTH,
    is_never_copied,
    is_staging_of,
    staging_name,
)
from .locks import locked

TAR_SUFFIXES = (".tar.gz", ".tgz")

try:
    _LIBC = ctypes.CDLL(None, use_errno=True)
except OSError:
    _LIBC = None


class BackupError(Exception):
    """The backup or restore cannot be done as asked; the message says why."""


class Stats:
    def __init__(self):
        self.lists = 0
        self.files = 0
        self.bytes = 0
        self.longest_lock_ms = 0.0
        self.started = time.monotonic()

    def seconds(self):
        return time.monotonic() - self.started


# -- backup --------------------------------------------------------------------


def backup(root, dest, *, fsync=True, say=print):
    """Copy the data directory ``root`` to ``dest``; returns :class:`Stats`.

    ``fsync=False`` skips flushing the copy to disk (tests only).  ``say``
    is told of each staging folder a killed backup to ``dest`` left, and
    that this one removes.
    """
    root, dest = os.path.abspath(root), os.path.abspath(dest)
    if not os.path.isfile(os.path.join(root, FORMAT_FILE)):
        raise BackupError(f"{root} is not a kintofs data directory (no {FORMAT_FILE})")
    if dest == root or dest.startswith(root + os.sep):
        raise BackupError("the backup cannot go inside the data directory")
    sink = (TarSink if dest.endswith(TAR_SUFFIXES) else FolderSink)(dest, fsync=fsync)
    stats = Stats()
    try:
        # After the sink's checks (a refused backup touches nothing); our
        # own staging folder is locked by now, so it is kept.
        for stale in remove_stale_staging(dest, BACKUP_STAGING):
            say(f"removed {stale}: left by a backup that was killed before it finished")
        pending = [(root, "")]
        while pending:
            folder, relative = pending.pop(0)
            files, children = _snapshot(folder, relative, stats, is_root=not relative)
            for name, (content, mtime) in files.items():
                sink.add(name, content, mtime)
                stats.files += 1
                stats.bytes += len(content)
            pending.extend(children)
        sink.finish()
    except BaseException:
        sink.abort()
        raise
    return stats


def _snapshot(folder, relative, stats, is_root):
    """Read a list's files (or the root's) under its lock.

    Returns ``({relative path: (bytes, mtime)}, [(list folder, relative path)])``:
    the lists found inside its objects are copied later, under their own locks.
    """
    files, children = {}, []
    started = time.monotonic()
    try:
        with locked(folder):
            for entry in _entries(folder):
                path, name = entry.path, _join(relative, entry.name)
                if entry.is_file(follow_symlinks=False):
                    files[name] = _read(path)
                elif (
                    entry.is_dir(follow_symlinks=False) and is_root and entry.name in KIND_OF_PLURAL
                ):
                    children.append((path, name))
                elif entry.is_dir(follow_symlinks=False):
                    # An object's folder (or, at the root, a folder of no list):
                    # its files belong to this lock, its lists have their own.
                    _read_tree(path, name, files, children)
    except (FileNotFoundError, ParentNotFound):
        return {}, []  # deleted meanwhile, after its parent was copied
    held = (time.monotonic() - started) * 1000
    stats.longest_lock_ms = max(stats.longest_lock_ms, held)
    stats.lists += 0 if is_root else 1
    return files, children


def _read_tree(folder, relative, files, children):
    for entry in _entries(folder):
        path, name = entry.path, _join(relative, entry.name)
        if entry.is_file(follow_symlinks=False):
            files[name] = _read(path)
        elif entry.is_dir(follow_symlinks=False):
            if entry.name in KIND_OF_PLURAL:
                children.append((path, name))
            else:
                _read_tree(path, name, files, children)


def _entries(folder):
    """What a backup copies: no lock files, no temp files, no trash."""
    with os.scandir(folder) as entries:
        return sorted((e for e in entries if not is_never_copied(e.name)), key=lambda e: e.name)


def _read(path):
    with open(path, "rb") as f:
        return f.read(), os.fstat(f.fileno()).st_mtime


def _join(relative, name):
    return f"{relative}/{name}" if relative else name


class FolderSink:
    """Write into a hidden sibling folder, renamed to ``dest`` once complete."""

    def __init__(self, dest, *, fsync):
        if os.path.exists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
            raise BackupError(f"{dest} already exists and is not an empty folder")
        self.dest, self.fsync = dest, fsync
        self.staging = Staging(dest, BACKUP_STAGING)

    def add(self, name, content, mtime):
        path = os.path.join(self.staging.folder, *name.split("/"))
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.utime(path, (mtime, mtime))

    def finish(self):
        if self.fsync:
            # Every file on disk before the name says "complete".
            sync_file_system(self.staging.folder)
        if os.path.isdir(self.dest):
            os.rmdir(self.dest)
        self.staging.rename_to(self.dest, fsync=self.fsync)
        # The staging lock was no file of the data; a crash before this
        # line leaves it, as harmless as any _lock.
        remove_quietly(os.path.join(self.dest, LOCK_NAME))
        self.staging.release()

    def abort(self):
        self.staging.remove()


class TarSink:
    """Write a gzip tarball in a hidden sibling folder, moved to ``dest`` once complete."""

    def __init__(self, dest, *, fsync):
        if os.path.exists(dest):
            raise BackupError(f"{dest} already exists")
        self.dest, self.fsync = dest, fsync
        self.staging = Staging(dest, BACKUP_STAGING)
        self.path = os.path.join(self.staging.folder, os.path.basename(dest))
        try:
            self.file = open(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")
            self.tar = tarfile.open(fileobj=self.file, mode="w:gz")
        except BaseException:
            self.staging.remove()
            raise

    def add(self, name, content, mtime):
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(content), int(mtime), 0o600
        self.tar.addfile(info, _BytesReader(content))

    def finish(self):
        self.tar.close()
        self.file.flush()
        if self.fsync:
            os.fsync(self.file.fileno())
        self.file.close()
        os.rename(self.path, self.dest)
        if self.fsync:
            fsync_folder(os.path.dirname(self.dest))
        self.staging.remove()  # only its lock file is left in it

    def abort(self):
        self.file.close()
        self.staging.remove()


class _BytesReader:
    def __init__(self, content):
        self.view, self.offset = memoryview(content), 0

    def read(self, size=-1):
        end = len(self.view) if size is None or size < 0 else self.offset + size
        chunk = bytes(self.view[self.offset : end])
        self.offset += len(chunk)
        return chunk


# -- restore -------------------------------------------------------------------


def restore(src, data_dir, *, force=False, fsync=True, say=print):
    """Put the backup ``src`` (folder or tarball) in place as ``data_dir``.

    ``data_dir`` must be absent or empty; with ``force``, an existing one is
    moved aside to ``<data_dir>.before-restore-<time>`` (returned), never
    deleted.  Stop the daemon first: it keeps the moved folder's files open.
    ``say`` is told of each staging folder a killed restore left, and that
    this one removes.
    """
    src, data_dir = os.path.abspath(src), os.path.abspath(data_dir)
    if not os.path.exists(src):
        raise BackupError(f"{src} does not exist")
    occupied = os.path.exists(data_dir) and (not os.path.isdir(data_dir) or os.listdir(data_dir))
    if occupied and not force:
        raise BackupError(
            f"{data_dir} is not empty; stop the daemon and pass --force "
            "to move it aside (it is kept, not deleted)"
        )
    staging = Staging(data_dir, RESTORE_STAGING)
    try:
        for stale in remove_stale_staging(data_dir, RESTORE_STAGING):
            say(f"removed {stale}: left by a restore that was killed before it finished")
        _fill(staging.folder, src, fsync=fsync)
    except BaseException:
        staging.remove()
        raise
    moved_aside = None
    if occupied:
        moved_aside = f"{data_dir}{MOVED_ASIDE}{time.strftime('%Y%m%dT%H%M%S')}"
        os.rename(data_dir, moved_aside)
    elif os.path.isdir(data_dir):
        os.rmdir(data_dir)
    # Its lock file stays: the restored directory's own root _lock.
    staging.rename_to(data_dir, fsync=fsync)
    staging.release()
    return moved_aside


def _fill(staging, src, *, fsync):
    """Copy or unpack the backup ``src`` into the (existing) folder ``staging``."""
    if os.path.isdir(src):
        shutil.copytree(src, staging, ignore=_not_restored, symlinks=True, dirs_exist_ok=True)
    else:
        _extract(src, staging)
    _check_restored_format(staging)
    _make_private(staging)
    if fsync:
        sync_file_system(staging)


def _not_restored(folder, names):
    return [n for n in names if is_never_copied(n)]


def _restorable(name):
    """Data, not a lock file or a leftover (``tar -C data .`` names start with ``./``)."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    return bool(parts) and not any(is_never_copied(part) for part in parts)


def _extract(tarball, staging):
    try:
        with tarfile.open(tarball, mode="r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member)
            keep = [m for m in members if _restorable(m.name)]
            if hasattr(tarfile, "data_filter"):
                tar.extractall(staging, members=keep, filter="data")
            else:  # Python before 3.11.4: _check_member did the same checks
                tar.extractall(staging, members=keep)
    except tarfile.TarError as error:
        raise BackupError(f"{tarball} is not a readable tar archive: {error}") from None


def _check_member(member):
    parts = member.name.split("/")
    if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
        raise BackupError(
            f"refusing archive member {member.name!r}: not a plain file or folder "
            "inside the archive"
        )


def _check_restored_format(folder):
    try:
        found = read_json(os.path.join(folder, FORMAT_FILE))
    except ValueError:
        found = None
    if found != FORMAT:
        raise BackupError(f"not a kintofs backup: {FORMAT_FILE} missing or of another version")


def _make_private(folder):
    os.chmod(folder, 0o700)
    for parent, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(parent, name), 0o700)
        for name in files:
            os.chmod(os.path.join(parent, name), 0o600)


def sync_file_system(path):
    """Flush the file system that holds ``path``: syncfs(2) on Linux, else sync(2).

    One call instead of an fsync per copied file, and only this file system.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        if _LIBC is not None and hasattr(_LIBC, "syncfs") and _LIBC.syncfs(fd) == 0:
            return
    finally:
        os.close(fd)
    os.sync()


# -- staging folders -------------------------------------------------------------


class Staging:
    """A new hidden folder beside ``target``, locked by this process until released.

    Beside it so that the final rename never crosses a file system; locked
    so that :func:`remove_stale_staging` can tell it from a killed run's.
    """

    def __init__(self, target, purpose):
        parent, name = os.path.split(target)
        if not os.path.isdir(parent):
            raise BackupError(f"{parent} does not exist")
        while True:
            token = uuid.uuid4().hex[:STAGING_TOKEN_LENGTH]
            self.folder = os.path.join(parent, staging_name(name, purpose, token))
            os.mkdir(self.folder, 0o700)
            self._lock = _lock_staging(self.folder, wait=True)
            if self._lock is not None:
                return
            # A cleaner removed the folder before we could lock it: a new name.

    def rename_to(self, target, *, fsync):
        """Put the folder in place as ``target`` (still locked: no cleaner may act)."""
        os.rename(self.folder, target)
        if fsync:
            fsync_folder(os.path.dirname(target))  # the rename itself survives a crash
        self.folder = target

    def remove(self):
        shutil.rmtree(self.folder, ignore_errors=True)
        self.release()

    def release(self):
        if self._lock is not None:
            os.close(self._lock)  # releases the flock
            self._lock = None


def remove_stale_staging(target, purpose):
    """Remove the staging folders of ``target`` whose lock is free; returns their paths.

    A free lock means the process that made the folder is gone: a live one
    holds it from the folder's first moment to its rename.  A busy lock is
    never waited for, and its folder never touched.
    """
    parent, name = os.path.split(target)
    removed = []
    with os.scandir(parent) as entries:
        candidates = sorted(
            entry.path
            for entry in entries
            if is_staging_of(entry.name, name, purpose) and entry.is_dir(follow_symlinks=False)
        )
    for folder in candidates:
        if _remove_if_abandoned(folder):
            removed.append(folder)
    return removed


def _remove_if_abandoned(folder):
    try:
        lock = _lock_staging(folder, wait=False)
    except PermissionError:
        return False  # another user's folder: not ours to judge
    if lock is None:
        return False  # a live process is filling it, or it was renamed meanwhile
    try:
        shutil.rmtree(folder, ignore_errors=True)
    finally:
        os.close(lock)
    return not os.path.exists(folder)


def _lock_staging(folder, *, wait):
    """A descriptor holding the flock of ``folder``'s lock file, or None.

    None when the folder is gone, when the lock is busy and ``wait`` is
    false, or when the folder was removed (or renamed) while we waited: the
    lock we got is then on a file no longer there.  The lock file is
    created if missing, so a folder killed before it had one (or made by
    kintofs 0.1.0) is recognised as abandoned too.
    """
    path = os.path.join(folder, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        if _same_file(path, fd):
            return fd
    except BlockingIOError:
        pass
    os.close(fd)
    return None


def _same_file(path, fd):
    try:
        status = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (status.st_dev, status.st_ino) == (opened.st_dev, opened.st_ino)
