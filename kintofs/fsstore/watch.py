"""Notice files edited by hand (``watchdog``) and make them normal changes.

A person may edit ``r1.json`` with a text editor, drop a new ``r2.json`` in
a records folder, or delete a file.  The watcher maps each file event to the
object it concerns and asks that object's list to adopt the change
(:meth:`FileList.adopt_edit`): a fresh ``last_modified``, a journal line,
an index that agrees.  Events are gathered for a moment first, because
editors write a file in several steps and our own atomic writes also
produce events (those are recognised as already known and cost one read).
"""

import logging
import os
import threading
import warnings

from watchdog.events import (
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from .layout import CONTAINERS, KIND_OF_PLURAL

try:  # Linux (watchdog 7's inotify classes; other backends never register twice)
    from watchdog.observers.inotify import InotifyEmitter, InotifyObserver, InotifyWatchGroup
except ImportError:
    InotifyWatchGroup = None

logger = logging.getLogger(__name__)

SETTLE_SECONDS = 0.2

# Asked of the kernel (the inotify mask), so every write's other events
# (opens, each write(), lock files) never reach Python: a file written in
# place ends with "closed", an atomic save with "moved", removals with
# "deleted", and a deleted bucket or collection folder with the last two.
EVENTS = [FileClosedEvent, FileMovedEvent, FileDeletedEvent, DirDeletedEvent, DirMovedEvent]


# Registering each folder once (see _OnceWatchGroup): watchdog 7's recursive
# inotify watch adds a watch for a new folder when it sees it created, then
# walks it to add the folders already inside.  A folder created inside it
# between the two (kintofs makes a bucket's or collection's folders in quick
# succession) is added by the walk and again by its own creation event.
# The second registration changes nothing (same callback, same mask), but
# watchdog warns about it with a RuntimeWarning whose text embeds the repr of
# the whole watch table (it formats ``watch.short_str`` without calling it).
# One bucket in six hit it: 86 MB of stderr after 1,500 buckets, each text
# kept in the warnings registry (memory), each repr built while holding the
# GIL (some 30 ms at 20,000 folders).  So the second registration is
# skipped; the filter is for watchdog versions where that fix does not apply.
DUPLICATE_CALLBACK_WARNING = r"Callback with id .* (already exists|does not exist) for watch"


def make_observer():
    """watchdog's Observer; with inotify, one that registers each folder once."""
    observer = Observer()
    if _can_register_once(observer):
        observer._emitter_class = _OnceEmitter
    return observer


def _can_register_once(observer):
    """True if ``observer`` is built the way _OnceEmitter expects (watchdog 7)."""
    if InotifyWatchGroup is None or not isinstance(observer, InotifyObserver):
        return False
    fields = getattr(InotifyWatchGroup, "__dataclass_fields__", {})
    return (
        callable(getattr(InotifyWatchGroup, "_add_callback", None))
        and "_active_callbacks_by_path" in fields
        and callable(getattr(InotifyEmitter, "get_event_mask_from_filter", None))
        and getattr(observer, "_emitter_class", None) is InotifyEmitter
    )


if InotifyWatchGroup is not None:

    class _OnceWatchGroup(InotifyWatchGroup):
        def _add_callback(self, path):
            if path not in self._active_callbacks_by_path:  # already watched: nothing to add
                super()._add_callback(path)

    class _OnceEmitter(InotifyEmitter):
        def on_thread_start(self):  # watchdog 7.1's, with our watch group
            self._inotify = _OnceWatchGroup(
                self._inotify_fd,
                os.fsencode(self.watch.path),
                is_recursive=self.watch.is_recursive,
                event_mask=self.get_event_mask_from_filter(),
                follow_symlink=self.watch.follow_symlink,
            )


def object_of(root, path):
    """``(parent, kind, id)`` of the object a data path belongs to, or None.

    ``buckets/b/collections/c/records/r1.json`` -> ``((("bucket", "b"),
    ("collection", "c")), "record", "r1")``; ``buckets/b/_bucket.json`` and
    the folder ``buckets/b`` itself -> ``((), "bucket", "b")``.
    """
    relative = os.path.relpath(path, root)
    if relative.startswith(".."):
        return None
    parts = relative.split(os.sep)
    name = parts[-1]
    if name.startswith(".") or name in ("_journal.jsonl", "_lock"):
        return None
    if len(parts) % 2:  # a file inside a container's folder: _bucket.json, _collection.acl
        return _container_file(parts)
    kind = KIND_OF_PLURAL.get(parts[-2])
    if kind in CONTAINERS:  # the folder of a container object
        return _with_parent(parts[:-2], kind, name)
    stem, dot, suffix = name.rpartition(".")
    if kind and dot and suffix in ("json", "acl"):  # a leaf object's file
        return _with_parent(parts[:-2], kind, stem)
    return None


def _container_file(parts):
    """``_bucket.json`` / ``_collection.acl`` inside a container's folder."""
    kind = KIND_OF_PLURAL.get(parts[-3]) if len(parts) >= 3 else None
    if kind in CONTAINERS and parts[-1] in (f"_{kind}.json", f"_{kind}.acl"):
        return _with_parent(parts[:-3], kind, parts[-2])
    return None


def _with_parent(parent_parts, kind, object_id):
    if len(parent_parts) % 2:
        return None
    parent = []
    for plural, parent_id in zip(parent_parts[::2], parent_parts[1::2], strict=True):
        parent_kind = KIND_OF_PLURAL.get(plural)
        if parent_kind not in CONTAINERS:
            return None
        parent.append((parent_kind, parent_id))
    return tuple(parent), kind, object_id


class FileWatcher(FileSystemEventHandler):
    """Watches a store's folder; ``on_adopted(parent, kind, id)`` is told of each
    edit, and of each event in a list whose index was not in memory: a list
    read from disk now has nothing to compare the files with (its load
    repairs what the journal missed), so the object may have been edited."""

    def __init__(self, store, on_adopted=lambda parent, kind, object_id: None):
        self.store = store
        self.on_adopted = on_adopted
        self._pending = set()
        self._wake = threading.Condition()
        self._stopping = False
        self._observer = make_observer()
        self._worker = threading.Thread(target=self._run, name="kintofs-watch", daemon=True)

    def start(self):
        warnings.filterwarnings("ignore", DUPLICATE_CALLBACK_WARNING, RuntimeWarning, r"watchdog\.")
        self._observer.schedule(self, self.store.root, recursive=True, event_filter=EVENTS)
        self._observer.start()
        self._worker.start()
        return self

    def stop(self):
        self._observer.stop()
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._observer.join(5)
        self._worker.join(5)

    def on_any_event(self, event):
        for path in (event.src_path, getattr(event, "dest_path", "")):
            target = object_of(self.store.root, os.fsdecode(path)) if path else None
            if target:
                with self._wake:
                    self._pending.add(target)
                    self._wake.notify()

    def _run(self):
        while True:
            with self._wake:
                while not self._pending and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
            # Let an editor finish its writes before we read the file.
            with self._wake:
                self._wake.wait(SETTLE_SECONDS)
                batch, self._pending = self._pending, set()
            for target in sorted(batch):
                self._adopt(*target)

    def _adopt(self, parent, kind, object_id):
        try:
            self.store.folder_of(parent, kind)
        except ValueError:
            return  # a folder no id could name: not ours
        try:
            if parent and not self.store.exists(parent):
                return
            known = self.store.holds(
                parent, kind
            )  # else dropped by the memory budget, or never read
            if self.store.list(parent, kind).adopt_edit(object_id):
                logger.info("adopted a change made by hand to %s %r", kind, object_id)
                self.on_adopted(parent, kind, object_id)
            elif not known:
                self.on_adopted(parent, kind, object_id)
        except Exception:  # a watcher must outlive any odd file
            logger.exception("could not adopt a change to %s %r", kind, object_id)
