"""Cross-process locks: one ``_lock`` file per list folder.

Protocol (documented in docs/storage.md so scripts can join in): a writer of a
list takes an exclusive ``flock`` on ``<list folder>/_lock`` for the whole
read-modify-write of an object and its journal line.  ``flock(1)`` from a
shell script takes the same lock.  Readers take no lock.

Why not the ``filelock`` library the design card names: its acquire always
creates the lock file's missing parent folders, so a writer racing the
deletion of a collection re-created the deleted folder (a zombie list).
Plain ``flock(2)`` on a file in an existing folder is the same kernel lock,
fails cleanly when the folder is gone, and needs no dependency.
"""

import fcntl
import os
import time
from contextlib import ExitStack, contextmanager

from .atomic import raise_if_disk_refused
from .base import ParentNotFound, StorageBusy, StorageFull
from .layout import LOCK_NAME

# Long enough for any single write; a lock held longer means a stuck process.
LOCK_TIMEOUT_SECONDS = 30


@contextmanager
def locked(folder, timeout=LOCK_TIMEOUT_SECONDS):
    """Hold the exclusive lock of ``folder``.

    Each call opens its own descriptor, and flock() excludes other
    descriptors, so threads of this process exclude each other too.  The
    kernel drops the lock when the descriptor closes, also when its process
    is killed: a ``_lock`` file left behind is never stale.  The folder must
    exist (ParentNotFound otherwise): creating it here would bring back a
    folder that another process has just deleted.
    """
    try:
        fd = _open_lock_file(os.path.join(folder, LOCK_NAME))
    except (FileNotFoundError, NotADirectoryError):
        raise ParentNotFound(folder) from None
    except OSError as error:
        raise_if_disk_refused(error)  # a read-only or full disk cannot hold a new lock file
        raise
    try:
        _flock_before(fd, time.monotonic() + timeout, folder, timeout)
        yield
    finally:
        os.close(fd)  # releases the lock


def _open_lock_file(path):
    """The lock file, opened read-only once it exists: flock needs no more, and
    closing a descriptor opened for writing wakes every inotify watcher."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)


def _flock_before(fd, deadline, folder, timeout):
    """flock(2) ``fd``, polling (a blocking flock cannot time out), briefly at first."""
    pause = 0.0005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise StorageBusy(f"lock of {folder} not acquired in {timeout}s") from None
            time.sleep(pause)
            pause = min(pause * 2, 0.02)


@contextmanager
def locked_for_reading(folder):
    """Hold the lock of ``folder`` where the disk allows it, for a reader.

    A read-only disk cannot give us the lock file, but it has no writers
    to keep out either; a full disk can only refuse a lock file that does
    not exist yet, which no writer holds.  So reads go on without it.
    """
    with ExitStack() as stack:
        try:
            stack.enter_context(locked(folder))
        except (StorageFull, ParentNotFound):
            pass  # ParentNotFound: deleted meanwhile, and reads as an empty list
        yield
