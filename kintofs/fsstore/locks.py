"""Cross-process locks: one ``_lock`` file per list folder.

Protocol (documented in docs/storage.md so scripts can join in): a writer of a
list takes an exclusive ``flock`` on ``<list folder>/_lock`` for the whole
read-modify-write of an object and its journal line.  ``flock(1)`` from a
shell script takes the same lock.  Readers take no lock.
"""
from contextlib import contextmanager

import filelock

from .base import StorageBusy

LOCK_NAME = "_lock"

# Long enough for any single write; a lock held longer means a stuck process.
LOCK_TIMEOUT_SECONDS = 30


@contextmanager
def locked(folder, timeout=LOCK_TIMEOUT_SECONDS):
    """Hold the exclusive lock of ``folder``.

    A fresh FileLock per call opens its own descriptor, and flock() excludes
    other descriptors, so threads of this process exclude each other too.
    """
    lock = filelock.FileLock(f"{folder}/{LOCK_NAME}", timeout=timeout, mode=0o600)
    try:
        lock.acquire()
    except filelock.Timeout as error:
        raise StorageBusy(f"lock of {folder} not acquired in {timeout}s") from error
    try:
        yield
    finally:
        lock.release()
