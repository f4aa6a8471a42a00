"""One list of objects on disk, with the in-memory index that serves reads.

A list lives in one folder.  A leaf object (group, record, account) is the
file ``<id>.json`` with its ACL sidecar ``<id>.acl``; a container object
(bucket, collection) is the folder ``<id>/`` holding ``_<kind>.json`` and
``_<kind>.acl`` next to the folders of its own lists.  The folder also holds
``_journal.jsonl`` (see journal.py) and ``_lock`` (see locks.py).

The index (objects, tombstones, list timestamp) is loaded once and kept
current by our own writes.  Before each use it is checked against the
journal's ``(inode, size)``: if another process appended, only the new lines
are read; if the journal was replaced, the list is loaded again.
"""

import errno
import json
import logging
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from contextlib import ExitStack, contextmanager, nullcontext
from types import MappingProxyType
from typing import NamedTuple

from . import commit as commits
from . import layout
from . import snapshot as snapshots
from .atomic import (
    dump_json,
    fsync_folder,
    raise_if_disk_refused,
    remove_quietly,
    sha256_of,
    write_bytes,
    write_temp,
)
from .base import (
    ObjectList,
    ParentNotFound,
    StorageBusy,
    StorageError,
    StorageFull,
    Stored,
    tombstone,
)
from .changes import ChangeOrder
from .commit import Commit, Op
from .journal import (
    Journal,
    content_digest,
    is_timestamp,
    last_written,
    latest_lines,
    line_hash,
    parse,
    rewritten_by_others,
)
from .layout import TRASH_PREFIX
from .locks import LOCK_TIMEOUT_SECONDS, locked, locked_for_reading

logger = logging.getLogger(__name__)


# Rewrite the journal once it holds this many more lines than the index has ids.
COMPACT_SLACK = 1000

# How long a commit that holds lists waits for one more (see FileList._hold).
LOCK_WAIT_IN_COMMIT_SECONDS = 5

# The logged overlay of a list no commit was handed over to (see FileList._logged).
NOTHING_LOGGED: Mapping = MappingProxyType({})
# The ids of a set most lists leave empty (an empty set or frozenset costs 216 bytes).
NO_IDS: frozenset[str] = frozenset()
# The views of a list that has none (see FileList.derived).
NO_DERIVED: Mapping = MappingProxyType({})

# What _read_files says of an object whose data file is not there.
MISSING = "missing"

# A file changed less than this before a load began may have changed during
# it: the index snapshot does not vouch for what the load read of it.  Wide
# enough for file systems that keep times to the second or two (FAT).
CTIME_MARGIN_NS = 3_000_000_000

# What a list's index costs in resident memory (CPython 3.11, 64-bit), as
# estimated by FileList.memory_estimate for the store's budget
# (index_memory_mb).  Fitted to what bench/index_memory.py measures (with
# tracemalloc, and the RSS a list adds in a fresh process); the table and the
# error per shape of data are in "Memory" in docs/storage.md.
LIST_BYTES = 1600  # a list with no object: the FileList, its locks and dicts, its folder
OBJECT_BYTES = 580  # one live object besides its JSON: Stored, two dicts, index slots
JSON_COMMA_BYTES = 40  # each "," of its compact JSON: one more value (pointer, int, str...)
JSON_BRACE_BYTES = 128  # each "{": one more dict
PAIR_BYTES = 120  # one (ts, id) pair of the change order, live or stale
TOMBSTONE_BYTES = 110  # one deleted id besides its pair
SIGNATURE_BYTES = 100  # one object last written by this process (see _signature)
# Views derived from a list (FileList.derived): at most this many per list,
# the least recently used dropped; one reference per object.  Rebuilt rather
# than updated once more than 1/32 of the list changed since the last use: a
# sorted view moves one object in ~70 us and sorts 100,000 in ~270 ms.
MAX_DERIVED = 4
DERIVED_BYTES = 200
DERIVED_ENTRY_BYTES = 8
DERIVED_REBUILD_SHARE = 32
DERIVED_REBUILD_SLACK = 64
# An index snapshot keeps each object's cost: valid only with the same constants.
COST_MODEL = [OBJECT_BYTES, JSON_COMMA_BYTES, JSON_BRACE_BYTES]


def now_ms():
    return int(time.time() * 1000)


def object_cost(stored):
    """Estimated resident bytes of one indexed object: a fixed part plus its
    compact JSON, with extra for each value (``,``) and dict (``{``) in it.
    Deterministic, so adding and removing an object cancel exactly."""
    text = json.dumps(stored.data, separators=(",", ":")) + json.dumps(
        stored.acl, separators=(",", ":")
    )
    return (
        OBJECT_BYTES
        + len(text)
        + JSON_COMMA_BYTES * text.count(",")
        + JSON_BRACE_BYTES * text.count("{")
    )


class FileList(ObjectList):
    # Slots: a daemon may hold thousands of lists, most of them small.
    __slots__ = (
        "folder",
        "kind",
        "container",
        "valid_id",
        "fsync",
        "clock",
        "on_container_deleted",
        "on_cost",
        "parent",
        "commit_log",
        "journal",
        "_guard",
        "_write_guard",
        "_writing",
        "_pending",
        "_pending_ts",
        "_holder",
        "_holders",
        "_flock",
        "_queue",
        "_turn",
        "_logged",
        "_logged_ts",
        "_signatures",
        "_identity",
        "_offset",
        "_last_line_hash",
        "_line_count",
        "_objects",
        "_tombstones",
        "_changes",
        "_timestamp",
        "_loaded",
        "_snapshot",
        "_adopted_by_load",
        "_vanishing",
        "_unreadable",
        "_derived",
        "_object_bytes",
        "_cost",
        "accounted",
        "used_at",
    )

    def __init__(
        self,
        folder,
        kind,
        *,
        container,
        valid_id,
        fsync=True,
        clock=now_ms,
        on_container_deleted=None,
        on_cost=None,
        parent=None,
        commit_log=None,
    ):
        """``on_cost(list)`` is called (holding the list's guard) each time
        :attr:`memory_estimate` changes; the store keeps its budget with it.
        ``commit_log`` (commit.py) makes the list's commits durable, and
        ``parent`` (the path of ids above it) names the list in its lines
        (:attr:`address`); without a log, every
        write makes its own files durable."""
        self.folder = folder
        self.kind = kind
        self.container = container
        self.valid_id = valid_id
        self.fsync = fsync
        self.clock = clock
        self.on_container_deleted = on_container_deleted or (lambda list_, object_id: None)
        self.parent, self.commit_log = parent, commit_log
        self.journal = Journal(folder, fsync=fsync)
        self._guard = threading.RLock()
        # The write guard is held by the one commit of this process that may
        # write the list now (_hold); the flock, by the process for as long as
        # one of its commits holds the list or still applies to it (_holders).
        self._write_guard = threading.Lock()
        self._writing = False  # this process holds the flock (see _refresh)
        self._holder = None  # the commit holding the write guard
        self._holders = 0  # commits holding the write guard or in the queue
        self._flock = None  # the ExitStack that holds the flock
        # Commits handed over (logged, commit.py) and not yet applied, in the
        # order of their log lines; each applies when it is first (_turn).
        # Both exist only while the queue is not empty: they cost a list
        # nothing the rest of the time.
        self._queue = None  # [(commit, ticket, ops, its own Condition of _guard)]
        self._turn = None  # a Condition of _guard: the queue is empty (_drain)
        # What those commits wrote: what the next holder sees under its own
        # writes (id -> Stored or _Gone; replaced, never changed), and their
        # list timestamp.
        self._logged, self._logged_ts = NOTHING_LOGGED, None
        self._pending = self._pending_ts = None  # see _own_pending
        self._signatures = {}  # id -> _signature() after our own last write (the watcher skips those)
        self._cost = 0
        self.accounted = (
            0  # what the store last counted for this list (the store's, under its lock)
        )
        self.used_at = 0.0  # time.monotonic() of its last use through the store (the store's)
        self._reset(identity=None)
        self._cost = self._estimate()
        self.on_cost = on_cost

    # -- where things are -------------------------------------------------

    @property
    def address(self):
        """How the commit log names this list (built when a line is written:
        kept, it cost each list a few hundred bytes)."""
        return {"parent": [list(pair) for pair in self.parent], "kind": self.kind}

    def data_path(self, object_id):
        return layout.data_path(self.folder, self.kind, self.container, object_id)

    def acl_path(self, object_id):
        return layout.acl_path(self.folder, self.kind, self.container, object_id)

    def child_folder(self, object_id):
        """The folder of a container object (where its own lists live)."""
        return os.path.join(self.folder, object_id)

    # -- reading ----------------------------------------------------------
    # Every read sees the committed index; the thread of a commit that wrote
    # to this list also sees its own pending writes (see commit.py).

    def get(self, object_id):
        self._refresh()
        pending = self._own_pending()
        if pending is not None and object_id in pending:
            found = pending[object_id]
            return found if isinstance(found, Stored) else None
        with self._guard:
            return self._objects.get(object_id)

    def objects(self):
        self._refresh()
        with self._guard:
            found = dict(self._objects)
        pending = self._own_pending()
        for object_id, change in (pending or {}).items():
            if isinstance(change, Stored):
                found[object_id] = change
            else:
                found.pop(object_id, None)
        return found

    def tombstones(self):
        self._refresh()
        with self._guard:
            found = dict(self._tombstones)
        pending = self._own_pending()
        for object_id, change in (pending or {}).items():
            if isinstance(change, Stored):
                found.pop(object_id, None)
            else:
                found[object_id] = change.ts
        return found

    def live(self):
        """Every live :class:`Stored`, in no order: a list of references (cheaper than a dict copy)."""
        self._refresh()
        if self._own_pending() is not None:
            return list(self.objects().values())
        return list(self._objects.values())

    def derived(self, key, build, use):
        """``use(view)`` of a structure derived from the live objects and kept
        current with them (an order's index, say: query.SortedObjects).

        ``build(stored_objects)`` makes the view the first time ``key`` is
        asked for; from then on, before each use, the list hands it what
        changed since: ``view.update([(previous Stored or None, current
        Stored or None)])``.  Each view is used by one thread at a time, and
        writers never wait for one.  None inside a commit that wrote here
        (its own writes are not in the index yet).
        """
        self._refresh()
        if self._own_pending() is not None:
            return None
        with self._guard:
            if self._derived is NO_DERIVED:
                self._derived = {}
            entry = self._derived.pop(key, None)
            if entry is None:
                entry = _Derived()
                while len(self._derived) >= MAX_DERIVED:
                    del self._derived[next(iter(self._derived))]
            self._derived[key] = entry  # the most recently used, last
        with entry.lock:
            with self._guard:
                changed = entry.take()
                if changed is None:
                    objects = list(self._objects.values())
                else:
                    changes = [(old, self._objects.get(i)) for i, old in changed.items()]
            if changed is None:
                entry.view = build(objects)
            elif changes:
                entry.view.update(changes)
            with self._guard:
                entry.cost = DERIVED_BYTES + DERIVED_ENTRY_BYTES * len(entry.view)
                if self._derived.get(key) is entry:
                    self._recount()
            return use(entry.view)

    def newest_first(self, since=None, until=None):
        """``(id, Stored or None, ts)`` of objects and tombstones (None) changed
        in ``(since, until]``, newest first; costs what it yields, not the list size."""
        self._refresh()
        pending = self._own_pending()
        if pending is not None:
            yield from self._newest_first_with(pending, since, until)
        else:
            yield from self._newest_first_committed(since, until)

    def _newest_first_with(self, pending, since, until):
        """newest_first inside a commit that wrote here (a batch reading its own writes)."""
        found = [
            (object_id, stored, ts)
            for object_id, stored, ts in self._newest_first_committed(since, until)
            if object_id not in pending
        ]
        for object_id, change in pending.items():
            ts = change.data["last_modified"] if isinstance(change, Stored) else change.ts
            if (since is None or ts > since) and (until is None or ts <= until):
                found.append((object_id, change if isinstance(change, Stored) else None, ts))
        found.sort(key=lambda item: item[2], reverse=True)
        return found

    def _newest_first_committed(self, since, until):
        objects, tombstones = self._objects, self._tombstones
        for object_id, ts in self._changes.newest_first(since, until):
            stored = objects.get(object_id)
            if stored is not None:
                yield object_id, stored, ts
            elif object_id in tombstones:
                yield object_id, None, ts

    def timestamp(self):
        self._refresh()
        if self._own_pending() is not None:
            return self._pending_ts
        with self._guard:
            if self._timestamp is not None:
                return self._timestamp
        # Never written: store "now" so that every later read agrees (Kinto does).
        try:
            with self.transaction() as writer:
                return writer.timestamp()
        except (ParentNotFound, StorageFull):
            # Nothing to keep the value in (no folder, or a disk that refuses writes).
            return self.clock()

    # -- writing ----------------------------------------------------------

    @contextmanager
    def transaction(self):
        """Hold the list (threads and processes) and yield a :class:`Writer`.

        Inside a commit (a batch: see commit.py) the list joins it, and stays
        locked until the commit ends; otherwise the transaction is a commit
        of its own.  An exception undoes this transaction's writes only.
        """
        outer = commits.current()
        with nullcontext(outer) if outer is not None else Commit(self.commit_log) as commit:
            self._ensure_folder()
            commit.join(self, self._hold)
            savepoint = commit.savepoint()
            try:
                yield Writer(self, commit)
            except BaseException:
                commit.rollback_to(savepoint)
                raise

    def _hold(self, wait_briefly=False):
        """Take the list's write guard for the calling thread's commit (and
        the flock, unless another commit of this process keeps it); returns
        the :class:`_Hold`.  A commit that already holds other lists waits
        less: two batches taking the same lists in opposite orders fail one
        of them (503) instead of both hanging."""
        timeout = LOCK_WAIT_IN_COMMIT_SECONDS if wait_briefly else LOCK_TIMEOUT_SECONDS
        if not self._write_guard.acquire(timeout=timeout):
            raise StorageBusy(f"{self.folder} is being written")
        try:
            with self._guard:
                take_flock = self._holders == 0
                self._holders += 1
            if take_flock:
                self._take_flock(timeout)
        except BaseException:
            self._leave()
            self._write_guard.release()
            raise
        with self._guard:
            self._holder = commits.current()
            earlier = [ticket for _commit, ticket, _ops, _wake in self._queue or ()]
        return _Hold(self, earlier)

    def _take_flock(self, timeout):
        with ExitStack() as held:
            held.enter_context(locked(self.folder, timeout=timeout))
            self._refresh(have_lock=True)
            with self._guard:
                self._flock, self._writing = held.pop_all(), True

    def _leave(self):
        """One commit less holds the list; the last one releases the flock."""
        with self._guard:
            self._holders -= 1
            if self._holders == 0 and self._flock is not None:
                self._writing = False
                self._flock.close()
                self._flock = None

    def _drain(self):
        """Wait until every commit handed over has applied (the write guard's
        holder only: nothing joins the queue meanwhile)."""
        with self._guard:
            turn = self._turn
            if turn is not None:
                turn.wait_for(lambda: not self._queue)

    def _ensure_folder(self):
        try:
            os.mkdir(self.folder, 0o700)
        except FileExistsError:
            pass
        except FileNotFoundError:
            raise ParentNotFound(self.folder) from None
        except OSError as error:
            raise_if_disk_refused(error)
            raise

    # -- files changed by hand ------------------------------------------

    def adopt_edit(self, object_id):
        """Make a change someone made to an object's files by hand a normal write.

        The edited content gets a fresh ``last_modified`` and a journal line,
        so pollers see it like any other change.  Returns True if there was
        such a change; our own writes come back False: the transaction waits
        for those handed over to it to be in the files and the index.
        """
        if not self.valid_id(object_id) or not os.path.isdir(self.folder):
            return False
        if object_id in self._objects and self._signatures.get(object_id) == self._signature(
            object_id
        ):
            return False  # the files are as our own last write left them: two stat() calls
        with self.transaction() as writer:
            # Compare with the files once our own handed-over commits are in them.
            self._drain()
            if self._adopted_by_load and object_id in self._adopted_by_load:
                self._adopted_by_load.discard(object_id)
                return True  # the load this transaction needed found the edit first
            known = self._objects.get(object_id)
            if not os.path.exists(self.data_path(object_id)):
                self._note_unreadable(object_id, None)  # nothing left to read
                if known is None or (
                    self.container and os.path.isdir(self.child_folder(object_id))
                ):
                    return False  # a container counts as deleted only once its folder is gone
                writer.forget(object_id)
                return True
            found = self._read_files(object_id)
            if found in (None, MISSING):
                return False  # unreadable (an editor half-way through): the next event retries
            on_disk, _digest, acl_bytes = found
            if on_disk != known:
                data = {k: v for k, v in on_disk.data.items() if k not in ("id", "last_modified")}
                # The data file gets its new last_modified; the ACL sidecar stays
                # as it is (absent, maybe still being copied: writing {} there
                # could replace the one a `tar -x` is about to write).
                writer.put(object_id, data, on_disk.acl, acl_file_bytes=acl_bytes)
            self._signatures[object_id] = self._signature(object_id)
            return on_disk != known

    def _signature(self, object_id):
        """A hash of the :func:`snapshot.signature` of an object's two files:
        changes whenever either is rewritten (one int per object instead of
        a string)."""
        return hash(self._file_signature(object_id))

    def _file_signature(self, object_id, folder_fd=None):
        """:func:`snapshot.signature`; ``folder_fd``: an open fd of the list's
        folder (see :func:`_opened_folder`), for the many stats of a load."""
        if folder_fd is None:
            return snapshots.signature(self.data_path(object_id), self.acl_path(object_id))
        return snapshots.signature(
            layout.data_name(self.kind, self.container, object_id),
            layout.acl_name(self.kind, self.container, object_id),
            dir_fd=folder_fd,
        )

    # -- memory -----------------------------------------------------------

    @property
    def memory_estimate(self):
        """Estimated resident bytes of this list's index (see LIST_BYTES)."""
        return self._cost

    @property
    def loaded(self):
        """True once the index was read (it is then kept current)."""
        return self._loaded

    @property
    def busy(self):
        """True while a transaction or a load holds the list."""
        return self._holders > 0 or self._write_guard.locked()

    def _estimate(self):
        return (
            LIST_BYTES
            + self._object_bytes
            + TOMBSTONE_BYTES * len(self._tombstones)
            + PAIR_BYTES * self._changes.pair_count()
            + SIGNATURE_BYTES * len(self._signatures)
            + sum(entry.cost for entry in self._derived.values())
        )

    def _recount(self):
        """Bring the estimate up to date after a change (caller holds the guard)."""
        cost = self._estimate()
        if cost != self._cost:
            self._cost = cost
            if self.on_cost is not None:
                self.on_cost(self)

    def _store_object(self, object_id, stored, cost=None):
        """Index ``stored`` as the live version of ``object_id`` (caller holds
        the guard); ``cost``: its :func:`object_cost`, if known already."""
        previous = self._objects.get(object_id)
        if previous is not None:
            self._object_bytes -= object_cost(previous)
        self._objects[object_id] = stored
        self._object_bytes += object_cost(stored) if cost is None else cost
        for entry in self._derived.values():
            entry.changed(object_id, previous, len(self._objects))

    def _indexed_put(self, object_id, stored, ts, signature):
        """The index after a durable put (caller holds the guard)."""
        self._unreadable.pop(object_id, None)  # its files are the ones just written
        self._signatures[object_id] = signature
        self._store_object(object_id, stored)
        self._tombstones.pop(object_id, None)
        self._changes.record(object_id, ts)
        self._timestamp = max(self._timestamp or 0, ts)

    def _indexed_delete(self, object_id, ts):
        """The index after a durable delete (caller holds the guard)."""
        self._unreadable.pop(object_id, None)  # its files are gone
        self._drop_object(object_id)
        self._tombstones[object_id] = ts
        self._changes.record(object_id, ts)
        self._timestamp = max(self._timestamp or 0, ts)

    def _drop_object(self, object_id):
        """Unindex the live version of ``object_id``, if any (caller holds the guard)."""
        previous = self._objects.pop(object_id, None)
        if previous is not None:
            self._object_bytes -= object_cost(previous)
            for entry in self._derived.values():
                entry.changed(object_id, previous, len(self._objects))
        self._signatures.pop(object_id, None)

    # -- commits (commit.py) ----------------------------------------------

    def _own_pending(self):
        """What the calling thread's commit sees above the index, if it holds the
        list: the writes handed over to it, under its own pending ones; or None."""
        holder = self._holder
        if holder is None or holder is not commits.current():
            return None
        if self._pending is None and self._logged:
            self._pending, self._pending_ts = dict(self._logged), self._logged_ts
        return self._pending

    def _current_timestamp(self):
        """The list timestamp as the holder of the list sees it (pending writes included)."""
        if self._pending is not None:
            return self._pending_ts
        return self._logged_ts or self._timestamp

    def _pend(self, commit, op):
        """Make ``op`` visible to its commit's thread (caller holds the list)."""
        if op.op == "file":
            return  # the object's attached file is not part of the object
        if self._pending is None:
            self._pending, self._pending_ts = dict(self._logged), self._logged_ts
        self._pending_ts = _overlay(self._pending, self._pending_ts or self._timestamp, op)

    def _relog(self):
        """The logged overlay of the commits still queued (one was dropped)."""
        logged, ts = {}, self._timestamp
        for _commit, _ticket, ops, _wake in self._queue:
            for op in ops:
                if op.op != "file":
                    ts = _overlay(logged, ts, op)
        self._logged, self._logged_ts = logged, ts

    def _rebuild_pending(self, commit, ops):
        """The overlay of ``ops`` only (a rolled-back savepoint)."""
        self._end_pending()
        for op in ops:
            self._pend(commit, op)

    def _end_pending(self):
        self._pending = self._pending_ts = None

    def _stage_op(self, op, *, durable):
        """Step 1 of a commit: the new files of ``op`` in temp files beside their place."""
        if op.op == "file":
            self._stage_file_op(op)
            return
        if op.op != "put":
            return
        files = [(op.data_bytes, self.data_path(op.object_id))]
        if op.write_acl:
            files.append((op.acl_bytes, self.acl_path(op.object_id)))
        for content, final in files:
            if os.path.isdir(final):  # put there by hand: the rename after the commit would fail
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), final)
            op.temps.append((write_temp(final, content, fsync=durable), final))

    def _stage_file_op(self, op):
        """An attached file's new version is staged already (by its writer); the
        one it replaces gets its kept name now, while nothing can change it."""
        self._drain()  # the file as the commits handed over to us leave it
        if op.temps and not os.path.isfile(op.temps[0][0]):
            raise StorageError(f"{op.temps[0][0]}: the staged file is gone")
        current = layout.attachment_path(self.folder, op.object_id)
        if op.keep_old and os.path.isfile(current):
            op.kept = layout.kept_attachment_path(self.folder, op.object_id, sha256_of(current))
        if self.fsync and op.temps:
            # The log holds its name, not its content: the file must survive on its own.
            fsync_folder(os.path.dirname(op.temps[0][0]))

    def _apply_ops(self, ops, *, durable):
        """Step 4: ``ops`` (this list's writes of a commit) into the files, the
        journal and the index.  Returns what to do once the lists are unlocked.

        The index takes the writes even if a file or the journal cannot be
        written: the commit is durable in its log, which recovery replays
        into the files; serving anything else would deny an answered write.
        """
        later, folders = [], set()
        try:
            for op in ops:
                later += self._apply_files(op, folders)
            if durable:
                for folder in folders:
                    fsync_folder(folder)
            lines = [op.journal_line() for op in ops if op.op != "file"]
            written = self.journal.append(lines, durable=durable)
        finally:
            self._index_ops(ops)
        with self._guard:
            self._after_append(lines, written)
        self._compact_if_due()
        return later

    def _apply_files(self, op, folders):
        """One op's renames and removals; returns what to do once unlocked."""
        if op.op == "file":
            self._apply_file_op(op)
            folders.add(self.folder)
            return []
        if op.op == "put":
            for temp, final in op.temps:
                os.replace(temp, final)  # data before ACL: see docs/storage.md
                folders.add(os.path.dirname(final))
            return []
        if op.op == "init":
            return []
        folders.add(self.folder)
        if not self.container:
            remove_quietly(self.data_path(op.object_id))
            remove_quietly(self.acl_path(op.object_id))
            return []
        later = [lambda object_id=op.object_id: self.on_container_deleted(self, object_id)]
        if op.op == "delete":
            trash = os.path.join(self.folder, f"{TRASH_PREFIX}{uuid.uuid4().hex}")
            os.rename(self.child_folder(op.object_id), trash)  # the whole subtree at once
            later.insert(0, lambda: shutil.rmtree(trash, ignore_errors=True))
        return later

    def _apply_file_op(self, op):
        target = layout.attachment_path(self.folder, op.object_id)
        if op.kept is not None:
            try:
                os.replace(target, op.kept)
            except FileNotFoundError:
                pass
        if op.temps:
            os.replace(op.temps[0][0], target)
        elif op.kept is None:
            remove_quietly(target)

    def _index_ops(self, ops):
        signatures = {op.object_id: self._signature(op.object_id) for op in ops if op.op == "put"}
        with self._guard:
            for op in ops:
                if op.op == "put":
                    stored = _compact(Stored(op.data, op.acl))
                    self._indexed_put(op.object_id, stored, op.ts, signatures[op.object_id])
                elif op.op in ("delete", "forget"):
                    self._indexed_delete(op.object_id, op.ts)
                elif op.op == "init":
                    self._timestamp = max(self._timestamp or 0, op.ts)
            self._recount()

    def replay(self, logged_ops):
        """Bring the files and the journal up to this list's writes in a dead
        process's commit log (recovery, commit.py); returns how many were
        missing from them.

        Done on the files and the journal as they are, before the index is
        loaded: a load would take a file whose journal line is missing for
        an edit, and give it a new timestamp.  A write is done when the
        journal has a newer line for its id (superseded), or its own line
        and the files it hashed.
        """
        self._ensure_folder()
        with self._write_guard, locked(self.folder):
            latest = {}  # id -> its newest journal line
            for entry in self.journal.read(0)[0]:
                if "id" in entry and entry["ts"] >= latest.get(entry["id"], entry)["ts"]:
                    latest[entry["id"]] = entry
            lines, files = [], 0
            for logged in logged_ops:
                if logged.get("op") == "file":
                    files += self._replayed_file(logged, latest.get(logged.get("id")))
                    continue
                line = self._replayed(logged, latest.get(logged.get("id")))
                if line is not None:
                    lines.append(line)
                    latest[line["id"]] = line
            if lines:
                self.journal.append(lines)
                with self._guard:
                    # Loaded again, in order (a live list keeps what it served:
                    # a process on the same folder died, this one replays it).
                    self._identity = None
                self._refresh(have_lock=True)
                self._compact()
            return len(lines) + files

    def _remove_staged_temps(self, object_id, names):
        """The temp files step 1 wrote beside the object's files: the dead process
        never renamed them (replay writes the files from the log)."""
        if not isinstance(names, list):
            return
        folder = os.path.dirname(self.data_path(object_id))
        for name in names:
            if layout.is_temp_name(name):
                remove_quietly(os.path.join(folder, name))

    def _replayed_file(self, logged, journaled):
        """Put an attached file in place, or remove it, as a logged "file" op
        says, unless it is done or a later write of its object superseded it."""
        object_id, ts = logged.get("id"), logged.get("ts")
        if not (isinstance(object_id, str) and self.valid_id(object_id) and is_timestamp(ts)):
            return False
        if journaled is not None and journaled["ts"] > ts:
            return False
        staged_name, kept_name = logged.get("from"), logged.get("kept")
        if not (staged_name is None or layout.is_upload_name(staged_name)) or not (
            kept_name is None or layout.is_kept_attachment_name(object_id, kept_name)
        ):
            return False  # never a path outside the list
        target = layout.attachment_path(self.folder, object_id)
        staged = os.path.join(os.path.dirname(self.folder), staged_name) if staged_name else None
        kept = os.path.join(self.folder, kept_name) if kept_name else None
        if staged is not None and not os.path.isfile(staged):
            return False  # renamed into place already
        if staged is None and not os.path.exists(target):
            return False  # removed already
        if kept is not None and os.path.isfile(target):
            os.replace(target, kept)
        if staged is not None:
            os.replace(staged, target)
        else:
            remove_quietly(target)
        return True

    def _replayed(self, logged, journaled):
        """The journal line ``logged`` still needs (its files written first
        where they are not the logged ones), or None when it is done or superseded."""
        object_id, ts, action = logged.get("id"), logged.get("ts"), logged.get("op")
        if not (isinstance(object_id, str) and self.valid_id(object_id) and is_timestamp(ts)):
            return None
        if journaled is not None and journaled["ts"] > ts:
            return None  # superseded
        if action == "put":
            data, acl = logged.get("data"), logged.get("acl")
            if not isinstance(data, dict) or not isinstance(acl, dict):
                return None
            self._remove_staged_temps(object_id, logged.get("temps"))
            found = self._read_files(object_id)
            in_place = found not in (None, MISSING) and found[1] == logged.get("hash")
            if in_place and journaled is not None and journaled["ts"] == ts:
                return None
            line = {"ts": ts, "op": "put", "id": object_id, "hash": logged.get("hash")}
            if not in_place:
                if self.container:
                    _make_folder(self.child_folder(object_id))
                data_bytes = dump_json(data)
                write_bytes(self.data_path(object_id), data_bytes, fsync=self.fsync)
                if logged.get("acl_file", True):
                    acl_bytes = dump_json(acl)
                    write_bytes(self.acl_path(object_id), acl_bytes, fsync=self.fsync)
                else:
                    acl_bytes = _read_if_there(self.acl_path(object_id)) or b""
                line["hash"] = content_digest(data_bytes, acl_bytes)
            return line
        if action in ("delete", "forget"):
            present = os.path.exists(self.data_path(object_id))
            if not present and journaled is not None and journaled["op"] == "delete":
                return None
            if present and self.container:
                trash = os.path.join(self.folder, f"{TRASH_PREFIX}{uuid.uuid4().hex}")
                os.rename(self.child_folder(object_id), trash)
                shutil.rmtree(trash, ignore_errors=True)
            elif present:
                remove_quietly(self.data_path(object_id))
                remove_quietly(self.acl_path(object_id))
            return {"ts": ts, "op": "delete", "id": object_id}
        return None

    # -- the index --------------------------------------------------------

    def _reset(self, identity):
        self._identity = identity
        self._offset = 0
        self._last_line_hash = 0  # of the journal's line that ends at _offset (see Journal.read_on)
        self._line_count = 0
        self._objects = {}
        self._object_bytes = 0
        self._tombstones = {}
        self._changes = ChangeOrder()
        self._timestamp = None
        self._loaded = False
        # A big list's (start of its last load in ns, journal bytes its snapshot stands for).
        self._snapshot = None
        self._adopted_by_load = None  # ids whose hand edit the last load made a revision
        # Ids served on by the last load, their files missing (see _Served).
        self._vanishing = NO_IDS
        self._unreadable = {}  # id -> the path of its file that did not read at the last look
        # key -> _Derived, least recently used first (see derived); shared
        # and empty until a view is asked for: most lists never have one.
        self._derived = NO_DERIVED

    def _refresh(self, have_lock=False):
        identity = self.journal.identity()
        with self._guard:
            # While our own transaction holds the list, no other process can
            # write it and the index is what that transaction has made
            # durable so far: serve it as is, without waiting for the writer.
            if self._loaded and (self._writing or identity == self._identity):
                return
            same_file = (
                self._loaded and identity and self._identity and identity[0] == self._identity[0]
            )
            no_newer_ctime = same_file and identity[2] <= self._identity[2]
            if no_newer_ctime and identity[1] <= self._identity[1]:
                # Stat'ed before a write of ours appended (or a torn tail was
                # cut): nothing new.  Reloading here stalled every request.
                return
            if same_file and identity[1] > self._identity[1] and self._read_new_lines(identity):
                return
            # Else replaced, or rewritten in place (a newer ctime): reloaded.
        if not os.path.isdir(self.folder):
            with self._guard:
                self._reset(identity=None)
                self._loaded = True
                self._recount()
            return
        if have_lock:
            self._load()
        else:
            with self._write_guard, locked_for_reading(self.folder):
                self._load()

    def _read_new_lines(self, identity):
        """Apply what another process appended since we last looked; False
        if the file is not the one we read (same inode, new content)."""
        found = self.journal.read_on(self._offset, self._last_line_hash)
        if found is None:
            return False
        entries, end, self._last_line_hash = found
        for entry in entries:
            self._apply(entry, self._read_object(entry.get("id")) if entry["op"] == "put" else None)
        self._offset = end
        self._identity = identity
        self._line_count += len(entries)
        self._recount()
        return True

    def _apply(self, entry, stored):
        ts = entry["ts"]
        self._timestamp = ts if self._timestamp is None else max(self._timestamp, ts)
        object_id = entry.get("id")
        if entry["op"] == "put" and stored is not None:
            self._store_object(object_id, stored)
            self._tombstones.pop(object_id, None)
            self._changes.record(object_id, _change_ts(stored, ts))
        elif entry["op"] in ("put", "delete") and isinstance(object_id, str):
            if entry["op"] == "delete":
                self._unreadable.pop(object_id, None)  # its files are gone (a repair, say)
            self._drop_object(object_id)
            self._tombstones[object_id] = ts
            self._changes.record(object_id, ts)

    def _load(self):
        """Read the folder and its journal from scratch (caller holds the lock).

        The files are the truth for live objects, the journal for timestamps
        and tombstones.  Where they disagree (a crash between writing a file
        and its journal line, or a file changed by hand) the journal gets a
        repair line, so readers and pollers see a normal change.  A list this
        index served already is also compared with what it served (see
        _Served): a journal replaced by an older copy must not take it back.
        """
        started_ns = time.time_ns()
        journal_bytes = self.journal.read_bytes()
        identity = self.journal.identity()
        with self._guard, _opened_folder(self.folder) as folder_fd:
            served = _Served.of(self)
            parsed = self._parse_journal(journal_bytes)
            # Nothing served to compare with (a list not loaded since start, or
            # dropped from memory): a journal written by others since kintofs
            # last wrote it is an older copy put back, whose files all agree
            # with it.  Every object becomes a new revision, so that pollers
            # see what the restore brought back and the ETag moves forward.
            # A last line without its newline is a crash's (whose ctime is
            # the killed append's), never a restore's.
            torn = identity is not None and identity[1] > parsed.end
            restored = (
                served is NOTHING_SERVED
                and not torn
                and rewritten_by_others(parsed.written, identity)
            )
            if restored:
                logger.warning(
                    "%s: the journal was put back by another program: every object is a "
                    "new revision",
                    self.folder,
                )
            self._reset(identity=identity)
            self._offset, self._line_count = parsed.end, parsed.line_count
            self._last_line_hash = line_hash(journal_bytes, parsed.end)
            self._timestamp, latest = parsed.timestamp, parsed.latest
            cached = {} if restored else parsed.cached  # a restore re-stamps every file
            files_read = 0
            for object_id, entry in latest.items():
                if entry["op"] == "delete":
                    self._tombstones[object_id] = entry["ts"]
            rewrite = served.raise_timestamp(self)
            repairs = []
            on_disk, unreadable = set(), set()
            for object_id in self._scan_ids():
                stored, cost = self._cached_object(object_id, cached, folder_fd)
                if stored is not None:
                    # Kept only in agreement with this line (see snapshot.write);
                    # its ACL bytes are read if a repair needs them.
                    found = stored, latest[object_id].get("hash"), None
                else:
                    found = self._read_files(object_id)
                    files_read += 1
                if found is MISSING:
                    continue  # removed since the scan (or a container folder without its data)
                if found is None:
                    unreadable.add(object_id)  # never a deletion: see below
                    continue
                stored, digest, acl_bytes = found
                on_disk.add(object_id)
                entry = latest.get(object_id)
                if served.as_served(object_id, stored):
                    rewrite |= _disagrees(entry, stored, digest)  # kept as it was served
                elif restored or _disagrees(entry, stored, digest) or served.is_older_copy(stored):
                    stored, digest = self._repair_unjournaled(
                        object_id, stored, digest, acl_bytes, fresh=restored
                    )
                    ts = stored.data["last_modified"]
                    repairs.append({"ts": ts, "op": "put", "id": object_id, "hash": digest})
                    cost = None
                self._store_object(object_id, stored, cost)
                self._tombstones.pop(object_id, None)
            # An unreadable file (an editor half-way through, a bad sector)
            # is not a deletion: it becomes a revision again once it can be
            # read (`kintofs check` reports it); until then what was served
            # of it, if anything, is served on.
            vanishing = set()
            for object_id in served.vanished(latest, on_disk | unreadable):
                if served.may_come_back(object_id):
                    self._serve_on(object_id, served.objects[object_id])
                    vanishing.add(object_id)
                    rewrite = True
                else:
                    ts = self._next_timestamp()
                    self._timestamp = ts
                    self._tombstones[object_id] = ts
                    repairs.append({"ts": ts, "op": "delete", "id": object_id})
            if vanishing:
                self._vanishing = frozenset(vanishing)
            for object_id in unreadable & served.objects.keys():
                self._serve_on(object_id, served.objects[object_id])  # being written
            rewrite |= served.restore_tombstones(self)
            if unreadable:
                logger.error(
                    "%s: %d unreadable object file(s) left as they are: %s",
                    self.folder,
                    len(unreadable),
                    ", ".join(sorted(unreadable)[:10]),
                )
            self._adopted_by_load = {e["id"] for e in repairs if e["op"] == "put"} or None
            if repairs:
                logger.warning("%s: journal repaired for %d object(s)", self.folder, len(repairs))
                try:
                    self._append(repairs)
                except StorageFull:
                    # Reads go on from the repaired index; the next load repairs again.
                    logger.warning("%s: the disk refused the journal repair", self.folder)
            if rewrite:
                # What the journal lacks is older than its last line: no append can say it.
                logger.warning("%s: journal older than what was served: rewritten", self.folder)
                self._compact()
            self._changes = ChangeOrder(self._current_changes())
            self._loaded = True
            self._recount()
            if len(self._objects) >= snapshots.MIN_OBJECTS:
                self._snapshot = (started_ns, parsed.snapshot_end)
                if parsed.snapshot_end is None or files_read >= snapshots.MIN_OBJECTS:
                    self._save_snapshot()

    def _parse_journal(self, journal_bytes):
        """What the journal says (its lines after the snapshot's, on top of the
        snapshot's parse of the earlier ones, if there is a snapshot for them)."""
        found = snapshots.read(self.snapshot_path, journal_bytes, COST_MODEL)
        start = 0 if found is None else found.offset
        entries, length = parse(journal_bytes[start:])
        if found is None:
            latest, timestamp = latest_lines(entries)
        else:
            latest, timestamp = latest_lines(entries, found.latest, found.timestamp)
        if found is None:
            return _Parsed(length, len(entries), timestamp, latest, last_written(entries), {}, None)
        written = max(
            (time for time in (found.written, last_written(entries)) if time is not None),
            default=None,
        )
        cached = found.objects
        for entry in entries:
            cached.pop(entry.get("id"), None)  # written since: read from the files
        return _Parsed(
            start + length,
            found.line_count + len(entries),
            timestamp,
            latest,
            written,
            cached,
            found.offset,
        )

    def _cached_object(self, object_id, cached, folder_fd):
        """``(Stored, its cost)`` of an object from the snapshot, if its files
        are still the ones the snapshot saw; else ``(None, None)``."""
        found = cached.pop(object_id, None)
        if found is None or found[0] != self._file_signature(object_id, folder_fd):
            return None, None
        return found[1], found[2]

    def _serve_on(self, object_id, stored):
        """Serve ``stored`` on while its files are missing or being written (see _Served)."""
        self._store_object(object_id, stored)
        self._tombstones.pop(object_id, None)

    def _current_changes(self):
        """``(id, ts)`` of each object's live version or tombstone."""
        for object_id, stored in self._objects.items():
            yield object_id, _change_ts(stored, 0)
        yield from self._tombstones.items()

    def _repair_unjournaled(self, object_id, stored, digest, acl_bytes, *, fresh=False):
        """Give files the journal never saw (or saw with other bytes) a timestamp
        the list can vouch for (``fresh``: a new one in any case); returns the
        object and its files' digest."""
        current = stored.data.get("last_modified")
        if acl_bytes is None:  # an object from the snapshot
            acl_bytes = _read_if_there(self.acl_path(object_id)) or b""
        if (
            not fresh
            and is_timestamp(current)
            and (self._timestamp is None or current > self._timestamp)
        ):
            ts = current
        else:
            ts = self._next_timestamp()
            data = dict(stored.data, id=object_id, last_modified=ts)
            data_bytes = dump_json(data)
            try:
                write_bytes(self.data_path(object_id), data_bytes, fsync=self.fsync)
                digest = content_digest(data_bytes, acl_bytes)
            except StorageFull:
                logger.warning("%s: the disk refused the repair of %r", self.folder, object_id)
            stored = Stored(data, stored.acl)
        self._timestamp = ts if self._timestamp is None else max(self._timestamp, ts)
        return stored, digest

    def _scan_ids(self):
        return layout.scan_ids(self.folder, self.container, self.valid_id)

    def _read_object(self, object_id):
        found = self._read_files(object_id)
        return found[0] if found not in (None, MISSING) else None

    def unreadable_files(self):
        """``{id: path}`` of the objects whose data file or ACL sidecar did
        not read at the last look (a load, the watcher, another process's
        journal line): what was served of them is served on (the heartbeat
        reports them).  An id leaves once its files read again or are gone."""
        with self._guard:
            return dict(self._unreadable)

    def _note_unreadable(self, object_id, path):
        """Remember that ``path``, a file of ``object_id``, did not read; with
        None, that the object's files read again or are gone."""
        if path is None and object_id not in self._unreadable:
            return  # the usual case, without taking the guard
        with self._guard:
            if path is None:
                self._unreadable.pop(object_id, None)
            else:
                self._unreadable[object_id] = path

    def _read_files(self, object_id):
        """``(Stored, content digest, ACL file bytes)`` of an object, MISSING
        when its data file is not there, None when it cannot be read."""
        if not isinstance(object_id, str) or not self.valid_id(object_id):
            return None
        path = self.data_path(object_id)  # then the ACL's: the one that did not read
        try:
            with open(path, "rb") as f:
                data_bytes = f.read()
            data = json.loads(data_bytes)
            path = self.acl_path(object_id)
            acl_bytes = _read_if_there(path)
            # Empty is not "no ACL" but a file being written (`tar -x`, `cp`): unreadable.
            acl = json.loads(acl_bytes) if acl_bytes is not None else {}
            acl_bytes = acl_bytes or b""
        except FileNotFoundError:
            self._note_unreadable(object_id, None)
            return MISSING
        except (OSError, ValueError) as error:
            logger.error("%s: unreadable object %r: %s", self.folder, object_id, error)
            self._note_unreadable(object_id, path)
            return None
        if not isinstance(data, dict):
            self._note_unreadable(object_id, self.data_path(object_id))
            return None
        self._note_unreadable(object_id, None)
        stored = _compact(Stored(data, acl if isinstance(acl, dict) else {}))
        return stored, content_digest(data_bytes, acl_bytes), acl_bytes

    # -- timestamps and journal writes (caller holds the lock) ------------

    def _next_timestamp(self, requested=None, current=None):
        """Kinto's rule: strictly after the list timestamp, unless the client
        asked for a specific value newer than the object's current one."""
        list_ts = self._current_timestamp() or 0
        if is_timestamp(requested) and (current is None or requested > current):
            return list_ts + 1 if requested == list_ts else requested
        return max(self.clock(), list_ts + 1)

    def _append(self, entries):
        # We hold the lock and have read every earlier line, so the file now
        # ends exactly after what we know.
        self._after_append(entries, self.journal.append(entries))

    def _after_append(self, entries, written):
        """Account for lines just appended to the journal, ``written`` their
        bytes (caller holds the lock and the guard)."""
        self._identity = self.journal.identity()
        self._offset = self._identity[1]
        if written:
            self._last_line_hash = line_hash(written)
        self._line_count += len(entries)

    def _compact_if_due(self):
        """Compact once the journal is much longer than the index (caller holds the lock)."""
        if self._line_count > 2 * (len(self._objects) + len(self._tombstones)) + COMPACT_SLACK:
            self._compact()

    def _compact(self):
        """Keep one line per id (its latest, with its hash) plus the list timestamp."""
        # The hashes are not kept in memory (a dict per object): read them back.
        hashes = {(e["id"], e["ts"]): e["hash"] for e in self.journal.read(0)[0] if "hash" in e}
        entries = []
        for object_id, stored in self._objects.items():
            ts = stored.data["last_modified"]
            entry = {"ts": ts, "op": "put", "id": object_id}
            if (object_id, ts) in hashes:
                entry["hash"] = hashes[object_id, ts]
            entries.append(entry)
        entries += [{"ts": ts, "op": "delete", "id": i} for i, ts in self._tombstones.items()]
        entries.sort(key=lambda e: e["ts"])
        # The init line only when no kept line carries the list timestamp:
        # a second line with the same ts would break the strict order.
        if self._timestamp is not None and (not entries or entries[-1]["ts"] < self._timestamp):
            entries.append({"ts": self._timestamp, "op": "init"})
        try:
            written = self.journal.rewrite(entries)
        except StorageFull:
            # The write that got us here is already durable; compact another time.
            logger.warning("%s: no room to compact the journal now", self.folder)
            return
        identity = self.journal.identity()
        with self._guard:
            self._identity, self._offset, self._line_count = identity, identity[1], len(entries)
            self._last_line_hash = line_hash(written)
        if self._loaded and self._snapshot is not None:
            self._save_snapshot()  # the old one stands for a journal that is gone

    # -- the index snapshot (snapshot.py; caller holds the lock) -----------

    @property
    def snapshot_path(self):
        return os.path.join(self.folder, layout.SNAPSHOT_NAME)

    def save_snapshot(self):
        """Bring a big list's index snapshot up to date, when the daemon
        stops; False if the list is busy or not worth one (small, unchanged)."""
        if self._snapshot is None and self._loaded and len(self._objects) >= snapshots.MIN_OBJECTS:
            self._snapshot = (0, None)  # grown by writes: only those are vouched for
        if self._snapshot is None or self._snapshot[1] == self._offset or self._holders:
            return False
        if not self._write_guard.acquire(timeout=1):
            return False
        try:
            with locked(self.folder, timeout=1):
                self._refresh(have_lock=True)
                return self._save_snapshot()
        except (StorageError, OSError) as error:  # busy, or the folder is gone: no stop fails here
            logger.warning("%s: no index snapshot at the stop: %s", self.folder, error)
            return False
        finally:
            self._write_guard.release()

    def _save_snapshot(self):
        """Write the snapshot of the index, vouching for each object whose files
        are known to hold what the index holds: the ones this process last
        wrote (still with the signature of that write), and the others if
        nothing changed their files since shortly before the index was loaded."""
        loaded_ns = self._snapshot[0]
        with self._guard:
            objects = list(self._objects.items())
            doubtful = self._vanishing | self._unreadable.keys()
            signatures = dict(self._signatures)
        vouched = {}
        with _opened_folder(self.folder) as folder_fd:
            for object_id, stored in objects:
                found = self._file_signature(object_id, folder_fd)
                if found is None or object_id in doubtful:
                    continue
                mine = signatures.get(object_id)
                if mine is not None:
                    unchanged = mine == hash(found)
                else:
                    unchanged = snapshots.newest_ctime(found) < loaded_ns - CTIME_MARGIN_NS
                if unchanged:
                    vouched[object_id] = (found, stored, object_cost(stored))
        end = snapshots.write(self.snapshot_path, self.journal.read_bytes(), vouched, COST_MODEL)
        if end is None:
            return False
        self._snapshot = (loaded_ns, end)
        return True


@contextmanager
def _opened_folder(path):
    """An open fd of the folder ``path`` for stat(dir_fd=...), closed after
    use; None where it cannot be opened or the system has no dir_fd stat."""
    if os.stat not in os.supports_dir_fd:
        yield None
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)


class _Derived:
    """A view kept by FileList.derived, and what changed since its last use."""

    __slots__ = ("view", "lock", "cost", "_previous")

    def __init__(self):
        self.view = None
        self.lock = threading.Lock()  # held by the thread using the view
        self.cost = 0
        # id -> its Stored as the view holds it (None: not in it); None while
        # there is no view to update (never built, or to be rebuilt).
        self._previous = None

    def changed(self, object_id, previous, size):
        """Note a change of the list (caller holds its guard).  Past a share
        of the list, rebuilding costs less than updating."""
        if self._previous is None:
            return
        self._previous.setdefault(object_id, previous)
        if len(self._previous) > size // DERIVED_REBUILD_SHARE + DERIVED_REBUILD_SLACK:
            self._previous = None

    def take(self):
        """What changed since the last take, or None if the view is to be
        (re)built; changes are noted from now on (caller holds the guard)."""
        previous, self._previous = self._previous, {}
        return previous


class Writer:
    """What a transaction may do.  Writes wait in the list's pending overlay
    until the commit ends (commit.py); what they return is what will be stored."""

    def __init__(self, object_list, commit):
        self._list, self._commit = object_list, commit

    def get(self, object_id):
        return self._list.get(object_id)

    def timestamp(self):
        lst = self._list
        ts = lst._current_timestamp()
        if ts is None:
            # Never written: journal the timestamp readers are about to see.
            ts = lst._next_timestamp()
            self._add(Op(lst, "init", ts))
        return ts

    def put(self, object_id, data, acl, *, requested_ts=None, acl_file_bytes=None):
        """Store ``data`` (with ``id`` and a fresh ``last_modified``) and ``acl``.

        ``acl_file_bytes``: the ACL sidecar's bytes as they are on disk, left
        as they are (b"" for none; ``acl`` must be what they hold): a hand edit.
        """
        lst = self._list
        current = self.get(object_id)
        ts = lst._next_timestamp(
            requested_ts, current.data.get("last_modified") if current else None
        )
        data = dict(data, id=object_id, last_modified=ts)
        if lst.container and current is None:
            lst._drain()  # a deletion handed over to us moves the old folder away first
            self._make_container_folder(lst.child_folder(object_id))
        data_bytes = dump_json(data)
        acl_bytes = dump_json(acl) if acl_file_bytes is None else acl_file_bytes
        digest = content_digest(data_bytes, acl_bytes)
        op = Op(lst, "put", ts, object_id, data, acl, data_bytes, acl_bytes, digest)
        # An update that keeps the permissions leaves the sidecar alone when it
        # holds them already: on ext4 a rename over a file costs 0.2 ms, as
        # much as the rest of the write.  (Commits handed over to us and not
        # yet in the files would show in ``current``.)
        op.write_acl = acl_file_bytes is None and not (
            current is not None
            and current.acl == acl
            and _holds(lst.acl_path(object_id), acl_bytes)
        )
        self._add(op)
        return data

    def delete(self, object_id, *, requested_ts=None):
        """Delete a live object (and, for containers, everything inside it)."""
        lst = self._list
        current = self.get(object_id)
        if current is None:
            raise KeyError(object_id)
        ts = lst._next_timestamp(requested_ts, current.data.get("last_modified"))
        self._add(Op(lst, "delete", ts, object_id))
        return tombstone(object_id, ts)

    def forget(self, object_id):
        """Journal the deletion of an object whose files a person removed."""
        self._add(Op(self._list, "forget", self._list._next_timestamp(), object_id))

    def put_file(self, object_id, staged_path, *, keep_old=False):
        """Make the file at ``staged_path`` the attached file of ``object_id``
        when the commit is made (blobs.py); it is deleted if it is undone.

        The file must be complete, durable, and in this list's container folder.
        ``keep_old``: the file it replaces is kept under a name of its content.
        """
        target = layout.attachment_path(self._list.folder, object_id)
        op = Op(self._list, "file", 0, object_id, temps=[(staged_path, target)], keep_old=keep_old)
        self._add(op)
        self.after_undo(lambda: remove_quietly(staged_path))

    def remove_file(self, object_id, *, keep_old=False):
        """Remove the attached file of ``object_id`` when the commit is made."""
        self._add(Op(self._list, "file", 0, object_id, keep_old=keep_old))

    def after_commit(self, callback):
        """Call ``callback()`` once the commit is durable and its lists unlocked
        (never if it is undone); an exception is logged."""
        self._commit.after_commit.append(callback)

    def after_undo(self, callback):
        """Call ``callback()`` if this transaction's writes are undone (a refused
        commit, an aborted batch, an exception in the transaction)."""
        self._commit.after_undo.append(callback)

    def _add(self, op):
        self._commit.ops.append(op)
        self._list._pend(self._commit, op)

    def _make_container_folder(self, folder):
        """A new bucket or collection gets its folder now, so that its own lists
        can be locked by the same commit; an undone commit removes it."""
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            return
        except OSError as error:
            _raise_storage_error(error, self._list.folder)
        self._commit.created_folders.append(folder)


class _Hold:
    """A commit's hold on one list (commit.py): the write guard until the commit
    hands the list over, then its place in the list's queue until applied."""

    __slots__ = ("object_list", "earlier", "_holding", "_queued", "_left")

    def __init__(self, object_list, earlier):
        self.object_list = object_list
        self.earlier = earlier  # tickets of the commits queued when it was taken
        self._holding, self._queued, self._left = True, None, False

    def hand_over(self, commit, ticket, ops):
        """The commit's line is in the log: queue its writes here (``ops``, maybe
        none) to be applied in turn, and let the next commit hold the list."""
        lst = self.object_list
        if ops:
            with lst._guard:
                if lst._queue is None:
                    lst._queue, lst._turn = [], threading.Condition(lst._guard)
                self._queued = (commit, ticket, ops, threading.Condition(lst._guard))
                lst._queue.append(self._queued)
                if lst._pending is not None:
                    lst._logged, lst._logged_ts = lst._pending, lst._pending_ts
        self._release_write_guard()
        if not ops:
            self.leave()

    def wait_turn(self):
        """Until the commits queued before this one have applied."""
        lst = self.object_list
        if self._queued is not None:
            with lst._guard:
                while lst._queue[0] is not self._queued:
                    self._queued[3].wait()

    def leave(self, indexed=False):
        """Done with the list: applied (``indexed``), or undone."""
        if self._left:
            return
        self._left = True
        self._release_write_guard()
        lst = self.object_list
        if self._queued is not None:
            with lst._guard:
                lst._queue.remove(self._queued)
                if not lst._queue:
                    lst._turn.notify_all()
                    lst._queue = lst._turn = None
                    lst._logged, lst._logged_ts = NOTHING_LOGGED, None
                else:
                    if not indexed:
                        lst._relog()
                    # Only the first may go on: waking every commit queued
                    # would cost each of them a thread switch per commit.
                    lst._queue[0][3].notify()
        lst._leave()

    def _release_write_guard(self):
        if self._holding:
            self._holding = False
            lst = self.object_list
            with lst._guard:
                lst._end_pending()
                lst._holder = None
            lst._write_guard.release()


def _overlay(overlay, ts, op):
    """Put ``op`` (not a file op) in ``overlay``; returns the list timestamp after it."""
    if op.op == "put":
        overlay[op.object_id] = Stored(op.data, op.acl)
    elif op.op in ("delete", "forget"):
        overlay[op.object_id] = _Gone(op.ts)
    return max(ts or op.ts, op.ts)


def _compact(stored):
    """Share the strings every object repeats (field names, principals) through
    Python's intern table: about a third less memory per indexed object."""
    data = {sys.intern(key): value for key, value in stored.data.items()}
    acl = {
        sys.intern(name): [sys.intern(p) if isinstance(p, str) else p for p in members]
        if isinstance(members, list)
        else members
        for name, members in stored.acl.items()
    }
    return Stored(data, acl)


class _Parsed(NamedTuple):
    """A journal as a load reads it (FileList._parse_journal)."""

    end: int  # where its complete lines end
    line_count: int
    timestamp: int | None  # the list timestamp: its largest ts
    latest: dict  # id -> its latest put or delete line
    written: int | None  # see journal.last_written
    cached: dict  # id -> (signature, Stored, cost): what the snapshot may spare reading
    snapshot_end: int | None  # the journal bytes its snapshot stood for, None without one


class _Gone(NamedTuple):
    """A pending deletion in a commit's overlay."""

    ts: int


class _Served(NamedTuple):
    """What a list's index served until its journal was replaced.

    Another process's compaction replaces a journal with one that says as
    much and more.  A restore (`rsync -a`, `cp -a`, `tar -x`, `git checkout`
    of an older copy) replaces it with an older one whose files agree with
    it: loaded alone, the list would serve the old state with its old
    timestamps, invisible to pollers, its timestamp gone back.  Compared with
    what was served, a file neither as served nor newer gets a fresh
    revision, and the list timestamp and tombstones stay; the journal is then
    rewritten.  An object served but without files now is served on once:
    the tool may be between removing and writing it (the watcher gives such
    a file a grace, see watch.py); missing at the next load too, it is gone.
    """

    objects: dict
    tombstones: dict
    timestamp: int
    vanishing: set | frozenset

    @classmethod
    def of(cls, object_list):
        if not object_list._loaded:
            return NOTHING_SERVED
        return cls(
            object_list._objects,
            object_list._tombstones,
            object_list._timestamp or 0,
            object_list._vanishing,
        )

    def raise_timestamp(self, object_list):
        """Never below what was served; True if the journal was behind it."""
        if (object_list._timestamp or 0) >= self.timestamp:
            return False
        object_list._timestamp = self.timestamp
        return True

    def as_served(self, object_id, stored):
        return self.objects.get(object_id) == stored

    def is_older_copy(self, stored):
        """True for files not as served and not newer than anything served."""
        if self is NOTHING_SERVED:
            return False
        current = stored.data.get("last_modified")
        return not (is_timestamp(current) and current > self.timestamp)

    def vanished(self, latest, present):
        """Ids live until now whose files are not ``present``: the ones served
        (but not those a newer line deleted), or with nothing served the
        ones the journal says are live."""
        if self is NOTHING_SERVED:
            live = {object_id for object_id, entry in latest.items() if entry["op"] == "put"}
        else:
            live = self.objects.keys()
        for object_id in live - present:
            entry = latest.get(object_id)
            if entry is None or entry["op"] == "put" or entry["ts"] <= self.timestamp:
                yield object_id

    def may_come_back(self, object_id):
        return self is not NOTHING_SERVED and object_id not in self.vanishing

    def restore_tombstones(self, object_list):
        """Put back the tombstones the journal lacks; True if there were any."""
        lacking = {
            object_id: ts
            for object_id, ts in self.tombstones.items()
            if object_id not in object_list._objects
            and object_list._tombstones.get(object_id, -1) < ts
        }
        object_list._tombstones.update(lacking)
        return bool(lacking)


NOTHING_SERVED = _Served({}, {}, 0, frozenset())


def _disagrees(entry, stored, digest):
    """True when an object's files are not what its latest journal line says."""
    if entry is None or entry["op"] != "put" or entry["ts"] != stored.data.get("last_modified"):
        return True
    expected = entry.get("hash")
    return isinstance(expected, str) and expected != digest


def _holds(path, content):
    """True if the file at ``path`` holds exactly ``content`` (False if it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(content) + 1) == content
    except OSError:
        return False


def _read_if_there(path):
    """The file's bytes, None if there is no such file."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _change_ts(stored, fallback):
    """Where an object sits in the change order: its ``last_modified``."""
    ts = stored.data.get("last_modified")
    return ts if is_timestamp(ts) else fallback


def _make_folder(path):
    """mkdir, not makedirs: a parent deleted meanwhile must not come back."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass


def _raise_storage_error(error, folder):
    """Re-raise ``error`` as the storage layer's own exception where one fits."""
    if isinstance(error, FileNotFoundError):
        raise ParentNotFound(folder) from None  # deleted meanwhile
    if isinstance(error, OSError):
        raise_if_disk_refused(error)
    raise error
