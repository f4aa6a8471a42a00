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

import json
import logging
import os
import shutil
import sys
import threading
import time
import uuid
from contextlib import contextmanager

from . import layout
from .atomic import (
    FileSwap,
    dump_json,
    fsync_folder,
    raise_if_disk_refused,
    read_json,
    remove_quietly,
    write_json,
)
from .base import ObjectList, ParentNotFound, StorageFull, Stored, tombstone
from .changes import ChangeOrder
from .journal import Journal, is_timestamp
from .locks import locked, locked_for_reading

logger = logging.getLogger(__name__)

TRASH_PREFIX = ".trash-"

# Rewrite the journal once it holds this many more lines than the index has ids.
COMPACT_SLACK = 1000

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
        "journal",
        "_guard",
        "_write_guard",
        "_signatures",
        "_identity",
        "_offset",
        "_line_count",
        "_objects",
        "_tombstones",
        "_changes",
        "_timestamp",
        "_loaded",
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
    ):
        """``on_cost(list)`` is called (holding the list's guard) each time
        :attr:`memory_estimate` changes; the store keeps its budget with it."""
        self.folder = folder
        self.kind = kind
        self.container = container
        self.valid_id = valid_id
        self.fsync = fsync
        self.clock = clock
        self.on_container_deleted = on_container_deleted or (lambda list_, object_id: None)
        self.journal = Journal(folder, fsync=fsync)
        self._guard = threading.RLock()
        self._write_guard = threading.Lock()
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

    def data_path(self, object_id):
        return layout.data_path(self.folder, self.kind, self.container, object_id)

    def acl_path(self, object_id):
        return layout.acl_path(self.folder, self.kind, self.container, object_id)

    def child_folder(self, object_id):
        """The folder of a container object (where its own lists live)."""
        return os.path.join(self.folder, object_id)

    # -- reading ----------------------------------------------------------

    def get(self, object_id):
        self._refresh()
        with self._guard:
            return self._objects.get(object_id)

    def objects(self):
        self._refresh()
        with self._guard:
            return dict(self._objects)

    def tombstones(self):
        self._refresh()
        with self._guard:
            return dict(self._tombstones)

    def live(self):
        """Every live :class:`Stored`, in no order: a list of references (cheaper than a dict copy)."""
        self._refresh()
        return list(self._objects.values())

    def newest_first(self, since=None, until=None):
        """``(id, Stored or None, ts)`` of objects and tombstones (None) changed
        in ``(since, until]``, newest first; costs what it yields, not the list size."""
        self._refresh()
        objects, tombstones = self._objects, self._tombstones
        for object_id, ts in self._changes.newest_first(since, until):
            stored = objects.get(object_id)
            if stored is not None:
                yield object_id, stored, ts
            elif object_id in tombstones:
                yield object_id, None, ts

    def timestamp(self):
        self._refresh()
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
        """Lock the list (threads and processes) and yield a :class:`Writer`."""
        self._ensure_folder()
        with self._write_guard, locked(self.folder):
            self._refresh(have_lock=True)
            yield Writer(self)

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
        such a change; our own writes are already in the index (they hold the
        lock until it is), so they come back False.
        """
        if not self.valid_id(object_id) or not os.path.isdir(self.folder):
            return False
        if object_id in self._objects and self._signatures.get(object_id) == self._signature(
            object_id
        ):
            return False  # the files are as our own last write left them: two stat() calls
        with self.transaction() as writer:
            known = self._objects.get(object_id)
            if not os.path.exists(self.data_path(object_id)):
                if known is None or (
                    self.container and os.path.isdir(self.child_folder(object_id))
                ):
                    return False  # a container counts as deleted only once its folder is gone
                self._forget_deleted_by_hand(object_id)
                return True
            on_disk = self._read_object(object_id)
            if on_disk is None:
                return False  # unreadable (an editor half-way through): the next event retries
            if on_disk != known:
                data = {k: v for k, v in on_disk.data.items() if k not in ("id", "last_modified")}
                writer.put(object_id, data, on_disk.acl)
            self._signatures[object_id] = self._signature(object_id)
            return on_disk != known

    def _signature(self, object_id):
        """A hash of what stat() says of an object's two files: changes whenever
        either is rewritten (a hash: one int per object instead of two tuples)."""
        found = []
        for path in (self.data_path(object_id), self.acl_path(object_id)):
            try:
                status = os.stat(path)
                found.append((status.st_ino, status.st_size, status.st_mtime_ns))
            except OSError:
                found.append(None)
        return hash(tuple(found))

    def _forget_deleted_by_hand(self, object_id):
        """Record the deletion of an object whose files a person removed (caller holds the lock)."""
        ts = self._next_timestamp()
        entry = [{"ts": ts, "op": "delete", "id": object_id}]
        self.journal.append(entry)
        with self._guard:
            self._indexed_delete(object_id, ts, entry)
        if self.container:
            self.on_container_deleted(self, object_id)
        else:
            remove_quietly(self.acl_path(object_id))

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
        return self._write_guard.locked()

    def _estimate(self):
        return (
            LIST_BYTES
            + self._object_bytes
            + TOMBSTONE_BYTES * len(self._tombstones)
            + PAIR_BYTES * self._changes.pair_count()
            + SIGNATURE_BYTES * len(self._signatures)
        )

    def _recount(self):
        """Bring the estimate up to date after a change (caller holds the guard)."""
        cost = self._estimate()
        if cost != self._cost:
            self._cost = cost
            if self.on_cost is not None:
                self.on_cost(self)

    def _store_object(self, object_id, stored):
        """Index ``stored`` as the live version of ``object_id`` (caller holds the guard)."""
        previous = self._objects.get(object_id)
        if previous is not None:
            self._object_bytes -= object_cost(previous)
        self._objects[object_id] = stored
        self._object_bytes += object_cost(stored)

    def _indexed_put(self, object_id, stored, ts, entry):
        """The index after a durable put and its journal ``entry`` (caller holds the guard)."""
        self._signatures[object_id] = self._signature(object_id)
        self._store_object(object_id, stored)
        self._tombstones.pop(object_id, None)
        self._changes.record(object_id, ts)
        self._timestamp = max(self._timestamp or 0, ts)
        self._after_append(entry)
        self._recount()

    def _indexed_delete(self, object_id, ts, entry):
        """The index after a durable delete and its journal ``entry`` (caller holds the guard)."""
        self._drop_object(object_id)
        self._tombstones[object_id] = ts
        self._changes.record(object_id, ts)
        self._timestamp = max(self._timestamp or 0, ts)
        self._after_append(entry)
        self._recount()

    def _init_timestamp(self):
        """The list timestamp, journaled first if the list was never written (caller holds the lock)."""
        with self._guard:
            if self._timestamp is None:
                ts = self._next_timestamp()
                self._append([{"ts": ts, "op": "init"}])
                self._timestamp = ts
            return self._timestamp

    def _drop_object(self, object_id):
        """Unindex the live version of ``object_id``, if any (caller holds the guard)."""
        previous = self._objects.pop(object_id, None)
        if previous is not None:
            self._object_bytes -= object_cost(previous)
        self._signatures.pop(object_id, None)

    # -- the index --------------------------------------------------------

    def _reset(self, identity):
        self._identity = identity
        self._offset = 0
        self._line_count = 0
        self._objects = {}
        self._object_bytes = 0
        self._tombstones = {}
        self._changes = ChangeOrder()
        self._timestamp = None
        self._loaded = False

    def _refresh(self, have_lock=False):
        identity = self.journal.identity()
        with self._guard:
            if self._loaded and identity == self._identity:
                return
            grown = (
                self._loaded
                and identity
                and self._identity
                and identity[0] == self._identity[0]
                and identity[1] > self._identity[1]
            )
            if grown:
                self._read_new_lines(identity)
                return
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
        """Apply what another process appended since we last looked."""
        entries, end = self.journal.read(self._offset)
        for entry in entries:
            self._apply(entry, self._read_object(entry.get("id")) if entry["op"] == "put" else None)
        self._offset = end
        self._identity = identity
        self._line_count += len(entries)
        self._recount()

    def _apply(self, entry, stored):
        ts = entry["ts"]
        self._timestamp = ts if self._timestamp is None else max(self._timestamp, ts)
        object_id = entry.get("id")
        if entry["op"] == "put" and stored is not None:
            self._store_object(object_id, stored)
            self._tombstones.pop(object_id, None)
            self._changes.record(object_id, _change_ts(stored, ts))
        elif entry["op"] in ("put", "delete") and isinstance(object_id, str):
            self._drop_object(object_id)
            self._tombstones[object_id] = ts
            self._changes.record(object_id, ts)

    def _load(self):
        """Read the folder and its journal from scratch (caller holds the lock).

        The files are the truth for live objects, the journal for timestamps
        and tombstones.  Where they disagree (a crash between writing a file
        and its journal line, or a file changed by hand) the journal gets a
        repair line, so readers and pollers see a normal change.
        """
        entries, end = self.journal.read(0)
        with self._guard:
            self._reset(identity=self.journal.identity())
            self._offset = end
            self._line_count = len(entries)
            latest = {}
            for entry in entries:
                self._timestamp = (
                    entry["ts"] if self._timestamp is None else max(self._timestamp, entry["ts"])
                )
                if entry["op"] in ("put", "delete") and isinstance(entry.get("id"), str):
                    latest[entry["id"]] = entry
            for object_id, entry in latest.items():
                if entry["op"] == "delete":
                    self._tombstones[object_id] = entry["ts"]
            repairs = []
            on_disk = set()
            for object_id in self._scan_ids():
                stored = self._read_object(object_id)
                if stored is None:
                    continue
                on_disk.add(object_id)
                entry = latest.get(object_id)
                if (
                    entry is None
                    or entry["op"] != "put"
                    or entry["ts"] != stored.data.get("last_modified")
                ):
                    stored = self._repair_unjournaled(object_id, stored)
                    repairs.append(
                        {"ts": stored.data["last_modified"], "op": "put", "id": object_id}
                    )
                self._store_object(object_id, stored)
                self._tombstones.pop(object_id, None)
            for object_id, entry in latest.items():
                if entry["op"] == "put" and object_id not in on_disk:
                    ts = self._next_timestamp()
                    self._timestamp = ts
                    self._tombstones[object_id] = ts
                    repairs.append({"ts": ts, "op": "delete", "id": object_id})
            if repairs:
                logger.warning("%s: journal repaired for %d object(s)", self.folder, len(repairs))
                try:
                    self._append(repairs)
                except StorageFull:
                    # Reads go on from the repaired index; the next load repairs again.
                    logger.warning("%s: the disk refused the journal repair", self.folder)
            self._changes = ChangeOrder(self._current_changes())
            self._loaded = True
            self._recount()

    def _current_changes(self):
        """``(id, ts)`` of each object's live version or tombstone."""
        for object_id, stored in self._objects.items():
            yield object_id, _change_ts(stored, 0)
        yield from self._tombstones.items()

    def _repair_unjournaled(self, object_id, stored):
        """Give a file the journal never saw a timestamp the list can vouch for."""
        current = stored.data.get("last_modified")
        if is_timestamp(current) and (self._timestamp is None or current > self._timestamp):
            ts = current
        else:
            ts = self._next_timestamp()
            data = dict(stored.data, id=object_id, last_modified=ts)
            try:
                write_json(self.data_path(object_id), data, fsync=self.fsync)
            except StorageFull:
                logger.warning("%s: the disk refused the repair of %r", self.folder, object_id)
            stored = Stored(data, stored.acl)
        self._timestamp = ts if self._timestamp is None else max(self._timestamp, ts)
        return stored

    def _scan_ids(self):
        return layout.scan_ids(self.folder, self.container, self.valid_id)

    def _read_object(self, object_id):
        if not isinstance(object_id, str) or not self.valid_id(object_id):
            return None
        try:
            data = read_json(self.data_path(object_id))
            acl = read_json(self.acl_path(object_id))
        except (OSError, ValueError) as error:
            logger.error("%s: unreadable object %r: %s", self.folder, object_id, error)
            return None
        if not isinstance(data, dict):
            return None
        return _compact(Stored(data, acl if isinstance(acl, dict) else {}))

    # -- timestamps and journal writes (caller holds the lock) ------------

    def _next_timestamp(self, requested=None, current=None):
        """Kinto's rule: strictly after the list timestamp, unless the client
        asked for a specific value newer than the object's current one."""
        list_ts = self._timestamp or 0
        if is_timestamp(requested) and (current is None or requested > current):
            return list_ts + 1 if requested == list_ts else requested
        return max(self.clock(), list_ts + 1)

    def _append(self, entries):
        # We hold the lock and have read every earlier line, so the file now
        # ends exactly after what we know.
        self.journal.append(entries)
        self._after_append(entries)

    def _after_append(self, entries):
        """Account for lines just appended to the journal (caller holds the lock)."""
        self._identity = self.journal.identity()
        self._offset = self._identity[1]
        self._line_count += len(entries)
        if self._line_count > 2 * (len(self._objects) + len(self._tombstones)) + COMPACT_SLACK:
            self._compact()

    def _compact(self):
        """Keep one line per id (its latest) plus the list timestamp."""
        entries = [
            {"ts": s.data["last_modified"], "op": "put", "id": i} for i, s in self._objects.items()
        ]
        entries += [{"ts": ts, "op": "delete", "id": i} for i, ts in self._tombstones.items()]
        entries.sort(key=lambda e: e["ts"])
        # The init line only when no kept line carries the list timestamp:
        # a second line with the same ts would break the strict order.
        if self._timestamp is not None and (not entries or entries[-1]["ts"] < self._timestamp):
            entries.append({"ts": self._timestamp, "op": "init"})
        try:
            self.journal.rewrite(entries)
        except StorageFull:
            # The write that got us here is already durable; compact another time.
            logger.warning("%s: no room to compact the journal now", self.folder)
            return
        identity = self.journal.identity()
        self._identity, self._offset, self._line_count = identity, identity[1], len(entries)


class Writer:
    """What a transaction may do; every method runs under the list lock."""

    def __init__(self, object_list):
        self._list = object_list

    def get(self, object_id):
        return self._list._objects.get(object_id)

    def timestamp(self):
        return self._list._init_timestamp()

    def put(self, object_id, data, acl, *, requested_ts=None):
        """Store ``data`` (with ``id`` and a fresh ``last_modified``) and ``acl``."""
        lst = self._list
        with lst._guard:
            current = lst._objects.get(object_id)
            ts = lst._next_timestamp(
                requested_ts, current.data.get("last_modified") if current else None
            )
            data = dict(data, id=object_id, last_modified=ts)
            entry = [{"ts": ts, "op": "put", "id": object_id}]
            new_folder = lst.child_folder(object_id) if lst.container and current is None else None
            swap = FileSwap(fsync=lst.fsync)
            try:
                if new_folder:
                    _make_folder(new_folder)
                    if lst.fsync:
                        fsync_folder(lst.folder)  # the new folder's name survives a power cut
                swap.stage(lst.data_path(object_id), dump_json(data))
                swap.stage(lst.acl_path(object_id), dump_json(acl))
                # Data before ACL: a crash in between leaves the old ACL (or none
                # on a new object), which grants less, never more.
                swap.apply()
                lst.journal.append(entry)
            except BaseException as error:
                # A refused write (full or read-only disk) must change nothing.
                swap.undo()
                if new_folder:
                    _remove_empty_folder(new_folder)
                _raise_storage_error(error, lst.folder)
            swap.commit()
            lst._indexed_put(object_id, _compact(Stored(data, acl)), ts, entry)
            return data

    def delete(self, object_id, *, requested_ts=None):
        """Delete a live object (and, for containers, everything inside it)."""
        lst = self._list
        with lst._guard:
            current = lst._objects[object_id]
            ts = lst._next_timestamp(requested_ts, current.data.get("last_modified"))
            entry = [{"ts": ts, "op": "delete", "id": object_id}]
            trash = None
            swap = FileSwap(fsync=lst.fsync)
            try:
                if lst.container:
                    # One rename makes the whole subtree vanish at once.
                    trash = os.path.join(lst.folder, f"{TRASH_PREFIX}{uuid.uuid4().hex}")
                    os.rename(lst.child_folder(object_id), trash)
                    if lst.fsync:
                        fsync_folder(lst.folder)  # so does the rename
                else:
                    swap.stage_removal(lst.data_path(object_id))
                    swap.stage_removal(lst.acl_path(object_id))
                    swap.apply()
                lst.journal.append(entry)
            except BaseException as error:
                # A refused write (full or read-only disk) must change nothing.
                swap.undo()
                if trash and os.path.isdir(trash):
                    os.rename(trash, lst.child_folder(object_id))
                _raise_storage_error(error, lst.folder)
            swap.commit()
            lst._indexed_delete(object_id, ts, entry)
        if trash:
            shutil.rmtree(trash, ignore_errors=True)
            lst.on_container_deleted(lst, object_id)
        return tombstone(object_id, ts)


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


def _remove_empty_folder(path):
    """Remove a folder a refused write created (left alone if not empty)."""
    try:
        os.rmdir(path)
    except OSError:
        pass


def _raise_storage_error(error, folder):
    """Re-raise ``error`` as the storage layer's own exception where one fits."""
    if isinstance(error, FileNotFoundError):
        raise ParentNotFound(folder) from None  # deleted meanwhile
    if isinstance(error, OSError):
        raise_if_disk_refused(error)
    raise error
