"""The file-system store: a tree of folders that mirrors Kinto's object URIs.

``/buckets/blog/collections/articles/records/r1`` is stored at
``<data>/buckets/blog/collections/articles/records/r1.json``.  See
docs/storage.md for the whole layout.
"""

import collections
import heapq
import json
import logging
import os
import secrets
import shutil
import threading
import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass

from .atomic import check_injected_fault, read_json, write_bytes, write_json
from .base import StorageError
from .commit import Commit, CommitLog, current, recover
from .generation import Generation
from .layout import (
    CONTAINERS,
    FORMAT,
    FORMAT_FILE,
    GENERATION_SUFFIX,
    HEARTBEAT_PREFIX,
    PLURALS,
    TRASH_PREFIX,
    secret_file,
    valid_id_for,
)
from .listing import FileList, now_ms
from .locks import locked, locked_for_reading

logger = logging.getLogger(__name__)


# A list used this recently is not idle: the memory budget never drops it.
# Without this, a list that alone exceeds what the budget leaves (the buckets
# list, touched by every request) would be dropped and re-read on every request.
RECENT_SECONDS = 1.0

# How many unreadable files FileSystemStore.unreadable_files names (the heartbeat's list).
UNREADABLE_LISTED = 20


@dataclass(frozen=True)
class UnreadableFiles:
    """What :meth:`FileSystemStore.unreadable_files` found."""

    count: int  # every unreadable object file of the lists in memory
    paths: list[str]  # the first of them, relative to the data folder, sorted


class FileSystemStore:
    def __init__(self, root, *, fsync=True, clock=now_ms, memory_budget=0, max_lists=0):
        """``memory_budget``: bytes the list indexes may take (their
        :attr:`FileList.memory_estimate`), 0 for no bound.  Beyond it, the
        least recently used lists that no transaction holds are dropped, and
        read again from disk when a request needs them.  ``max_lists`` (the
        deprecated ``index_max_lists``): the same with a number of lists."""
        self.root = os.path.abspath(root)
        self.fsync = fsync
        self.clock = clock
        self.memory_budget = memory_budget
        self.max_lists = max_lists
        self.recent_seconds = RECENT_SECONDS
        self._lists = collections.OrderedDict()  # folder -> FileList, least recently used first
        # (parent, kind) -> folder of the lists in _lists: a read asks for
        # three lists, and building and checking their paths was a tenth of it.
        self._folders = {}
        self._memory = 0  # sum of the lists' ``accounted``
        self._lists_guard = threading.RLock()
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        self._check_format()
        self.commits = CommitLog(self.root, fsync=fsync, clock=clock)
        self._recover()

    # -- lists ------------------------------------------------------------

    def folder_of(self, parent, kind):
        """The folder of the list of ``kind`` objects under ``parent``."""
        parts = [self.root]
        for parent_kind, parent_id in parent:
            if parent_kind not in CONTAINERS or not valid_id_for(parent_kind)(parent_id):
                raise ValueError(f"not a container path: {parent!r}")
            parts += [PLURALS[parent_kind], parent_id]
        return os.path.join(*parts, PLURALS[kind])

    def list(self, parent, kind):
        """The :class:`FileList` of ``kind`` objects under ``parent``."""
        parent = tuple(parent)
        folder = self._folders.get((parent, kind)) or self.folder_of(parent, kind)
        now = time.monotonic()
        with self._lists_guard:
            found = self._lists.get(folder)
            if found is None:
                found = FileList(
                    folder,
                    kind,
                    container=kind in CONTAINERS,
                    valid_id=valid_id_for(kind),
                    fsync=self.fsync,
                    clock=self.clock,
                    on_container_deleted=self._forget_below,
                    on_cost=self._cost_changed,
                    parent=parent,
                    commit_log=self.commits,
                )
                found.used_at = now
                self._lists[folder] = found
                self._folders[parent, kind] = folder
                self._cost_changed(found)
            else:
                found.used_at = now
                self._lists.move_to_end(folder)
                if self.memory_budget and self._memory > self.memory_budget:
                    self._drop_over_budget(
                        keep=found
                    )  # lists that were in use then may be idle now
            return found

    # -- commits (commit.py) -------------------------------------------------

    def commit(self):
        """A context in which every transaction joins one commit: all of its
        writes become durable together, or none does (a batch).  Inside a
        commit already, the same commit."""
        return nullcontext(current()) if current() is not None else Commit(self.commits)

    def close(self):
        """Checkpoint the commit log (a clean stop leaves none behind), and
        bring the index snapshots of big lists up to date (snapshot.py)."""
        self.commits.close()
        with self._lists_guard:
            lists = list(self._lists.values())
        for object_list in lists:
            object_list.save_snapshot()

    def _recover(self):
        self.replayed = 0  # writes the logs held that the files missed
        self.recover_dead_commits()

    def recover_dead_commits(self):
        """Finish the commits of processes that died before their files were
        written: at start, and now and then while serving (another process on
        the same data directory may die at any time).  Returns how many writes
        the files missed."""
        try:
            replayed = recover(self.root, self._list_at)
        except (OSError, StorageError):
            # A read-only disk, say: serve what the files hold; the log stays for later.
            logger.exception("could not replay the commit logs in %s", self.root)
            return 0
        if replayed:
            self.replayed += replayed
            self._bump_generations()
        return replayed

    def _bump_generations(self):
        """Replayed writes are changes no running process was told of (a dead
        one could not bump the token of what it changed): invalidate every
        derived index, group memberships included.  A rebuild is all it costs."""
        for name in os.listdir(self.root):
            if name.startswith("_") and name.endswith(GENERATION_SUFFIX):
                self.generation(name[1 : -len(GENERATION_SUFFIX)]).bump()

    def _list_at(self, address):
        """The list a commit log line names, or None if it names none."""
        try:
            parent = tuple((kind, object_id) for kind, object_id in address["parent"])
            return self.list(parent, address["kind"])
        except (KeyError, TypeError, ValueError):
            return None

    @property
    def memory_estimate(self):
        """Estimated bytes of every list index held (what ``memory_budget`` bounds)."""
        return self._memory

    def held(self):
        """The lists whose index is in memory, least recently used first."""
        with self._lists_guard:
            return list(self._lists.values())

    def holds(self, parent, kind):
        """True if the index of that list is in memory (loads and moves nothing)."""
        folder = self.folder_of(tuple(parent), kind)
        with self._lists_guard:
            found = self._lists.get(folder)
        return found is not None and found.loaded

    def _cost_changed(self, object_list):
        """A held list's estimate changed (it calls this holding its own guard)."""
        with self._lists_guard:
            if self._lists.get(object_list.folder) is not object_list:
                return  # dropped already: it no longer counts
            self._memory += object_list.memory_estimate - object_list.accounted
            object_list.accounted = object_list.memory_estimate
            self._drop_over_budget(keep=object_list)

    def _drop_over_budget(self, keep):
        """Drop least recently used idle lists until the budget holds (caller holds the guard).

        Idle: not ``keep`` (the list that just grew), not held by a
        transaction or a load, not used in the last ``recent_seconds``.
        Dropping only forgets the index: a request still holding a dropped
        list finishes with it (its memory goes with the request), and the
        next one reads the folder again.  The file lock and the journal check
        keep two instances of one list consistent, as they keep two processes.
        The deprecated ``max_lists`` drops lists used just now too.
        """
        recent = time.monotonic() - self.recent_seconds
        while True:
            over_count = self.max_lists and len(self._lists) > self.max_lists
            if not (over_count or (self.memory_budget and self._memory > self.memory_budget)):
                return
            for folder, candidate in self._lists.items():
                if candidate.used_at > recent and not over_count:
                    return  # this one and all after it were used just now
                if candidate is not keep and not candidate.busy:
                    self._drop(folder)
                    break
            else:
                return  # everything left is in use: over budget until it is not

    def _drop(self, folder):
        """Forget the list of ``folder`` (caller holds the guard)."""
        dropped = self._lists.pop(folder)
        self._folders.pop((dropped.parent, dropped.kind), None)
        self._memory -= dropped.accounted
        dropped.accounted = 0

    def get(self, parent, kind, object_id):
        return self.list(parent, kind).get(object_id)

    def exists(self, path):
        """True if every object along ``path`` (``((kind, id), ...)``) is live."""
        path = tuple(path)
        return all(
            self.get(path[:depth], kind, object_id) is not None
            for depth, (kind, object_id) in enumerate(path)
        )

    def _forget_below(self, object_list, object_id):
        """Drop cached lists inside a container that was just deleted."""
        prefix = object_list.child_folder(object_id) + os.sep
        with self._lists_guard:
            for folder in [f for f in self._lists if f.startswith(prefix)]:
                self._drop(folder)

    # -- whole store ------------------------------------------------------

    def flush(self):
        """Delete every object (the flush plugin)."""
        with locked(self.root):
            for plural in PLURALS.values():
                folder = os.path.join(self.root, plural)
                if os.path.isdir(folder):
                    trash = os.path.join(self.root, f"{TRASH_PREFIX}{uuid.uuid4().hex}")
                    os.rename(folder, trash)
                    shutil.rmtree(trash, ignore_errors=True)
            with self._lists_guard:
                for folder in list(self._lists):
                    self._drop(folder)

    def generation(self, name):
        """The :class:`Generation` token ``name`` (derived-data invalidation)."""
        return Generation(self.root, name, fsync=self.fsync)

    def persistent_secret(self, name):
        """A random secret generated once and kept in ``_<name>`` (owner-only)."""
        path = os.path.join(self.root, secret_file(name))
        with locked_for_reading(self.root):  # a read-only disk may still serve reads
            try:
                with open(path, encoding="utf-8") as f:
                    return f.read().strip()
            except FileNotFoundError:
                value = secrets.token_hex(32)
                write_bytes(path, (value + "\n").encode(), fsync=self.fsync)
                return value

    def healthy(self):
        """True if the data folder can be written (heartbeat)."""
        try:
            check_injected_fault()
            probe = os.path.join(self.root, f"{HEARTBEAT_PREFIX}{uuid.uuid4().hex}")
            with open(probe, "wb") as f:
                f.write(b"ok")
            os.unlink(probe)
            return True
        except OSError:
            return False

    def unreadable_files(self, limit=UNREADABLE_LISTED):
        """The object files (data or ACL) that the lists in memory could not
        read at their last look: an editor half-way through, bad bytes.  Each
        list serves on what it served of them (see FileList.unreadable_files);
        a file leaves once it reads again, is gone, or its list is dropped
        from memory.  How many, and the first ``limit`` paths relative to the
        data folder.  Reads no file (heartbeat)."""
        found = [path for lst in self.held() for path in lst.unreadable_files().values()]
        first = heapq.nsmallest(limit, found)
        return UnreadableFiles(len(found), [os.path.relpath(path, self.root) for path in first])

    def readable(self):
        """True if the data folder can be read (heartbeat in read-only mode)."""
        return os.access(self.root, os.R_OK | os.X_OK) and os.path.isdir(self.root)

    def _check_format(self):
        path = os.path.join(self.root, FORMAT_FILE)
        with locked_for_reading(self.root):  # a read-only disk may still serve reads
            try:
                found = read_json(path)
            except ValueError:
                raise StorageError(f"{path} is not valid JSON") from None
            if found is None:
                write_json(path, FORMAT, fsync=self.fsync)
            elif found != FORMAT:
                raise StorageError(
                    f"{path} says {json.dumps(found)}; this kintofs reads {json.dumps(FORMAT)}"
                )
