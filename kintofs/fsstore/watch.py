"""Notice files edited by hand (``watchdog``) and make them normal changes.

A person may edit ``r1.json`` with a text editor, drop a new ``r2.json`` in
a records folder, or delete a file.  The watcher maps each file event to the
object it concerns and asks that object's list to adopt the change
(:meth:`FileList.adopt_edit`): a fresh ``last_modified``, a journal line,
an index that agrees.  Events are gathered for a moment first, because
editors write a file in several steps.  The events of our own writes
stop where they are read from the kernel (see _OnceWatchGroup.on_event);
those that get through (a delete's removals) are recognised as already
known with two stat() calls.

A file that vanishes is not deleted yet: many editors save by moving the
file away and writing a new one, seconds later if the disk is slow (vim's
backup copy, Emacs).  An object whose file stays missing for
DELETE_GRACE_SECONDS is adopted as deleted; one that comes back before is
an ordinary edit, with its ACL sidecar untouched in between.

A folder that appears (``mkdir -p``, ``cp -a`` or ``tar -x`` of a whole
collection, a ``mv`` from elsewhere) is watched from its creation event on:
what was written inside before that sent no event the watcher could get.
So each new folder is walked once its watch exists, and every object file
found in it is handled like an edit (see _objects_in).
"""

import logging
import os
import threading
import time
import warnings

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from .atomic import own_temp_prefix
from .layout import is_bookkeeping, object_of

try:  # Linux (watchdog 7's inotify classes; other backends never register twice)
    from watchdog.observers.inotify import InotifyEmitter, InotifyObserver, InotifyWatchGroup
except ImportError:
    InotifyWatchGroup = None

logger = logging.getLogger(__name__)

# A burst of events is handled once it has been quiet this long (an editor's
# save is a few events within a millisecond), or at the latest this long
# after it began (a long `tar -x`).
QUIET_SECONDS = 0.05
SETTLE_SECONDS = 0.5

# How long an object's file may be missing before its absence is a deletion:
# longer than an editor takes between moving a file away and writing the new
# one (vim on a busy disk, a save dialog), short enough for `rm` to show soon.
DELETE_GRACE_SECONDS = 5.0

# Asked of the kernel (the inotify mask), so every write's other events
# (opens, each write(), lock files) never reach Python: a file written in
# place ends with "closed", an atomic save with "moved", removals with
# "deleted", and a deleted bucket or collection folder with the last two.
# A new folder's "created" is there to walk it (what a recursive watch asks
# of the kernel anyway: watchdog needs it to watch the new folder).  A file's
# "created" is how watchdog reports a file moved in from outside the data
# directory (a rename whose "from" it never saw); the kernel's own creation
# of a file is dropped as it is read (_OnceWatchGroup): its "closed" or
# "moved" follows.
EVENTS = [
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    FileCreatedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]


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
        and callable(getattr(InotifyWatchGroup, "_build_event_source_path", None))
        and "_active_callbacks_by_path" in fields
        and callable(getattr(InotifyEmitter, "get_event_mask_from_filter", None))
        and getattr(observer, "_emitter_class", None) is InotifyEmitter
    )


if InotifyWatchGroup is not None:

    class _OnceWatchGroup(InotifyWatchGroup):
        def _add_callback(self, path):
            if path not in self._active_callbacks_by_path:  # already watched: nothing to add
                super()._add_callback(path)

        # Each write of ours makes ten kernel events: its two temp files'
        # creation, closing and rename (from, to), the closing of its list's
        # journal and of the commit log.  None is a change the handler would
        # act on (the renames are ours, and known), but each would cross
        # three watchdog threads as one or two event objects: 0.5 ms of CPU
        # per create, as much as the write itself.  So they stop here, where
        # the kernel's events are read.  Another process's renames go on: its
        # temp files carry its own process id and token (atomic.py).
        def __post_init__(self):
            self._own_temp_prefix = os.fsencode(own_temp_prefix())
            self._own_renames = set()  # cookies: the rename's "to" follows its "from"
            super().__post_init__()  # starts watching

        def on_event(self, event):
            if not event.is_directory and self._ignorable(event):
                return
            super().on_event(event)

        def _ignorable(self, event):
            if event.is_create:
                return True  # a file's creation: its closing or rename follows
            if event.is_close_write:  # temp file, journal (by name), commit log
                return is_bookkeeping(os.fsdecode(event.name)) or not self._of_an_object(event)
            if event.is_moved_from and event.name.startswith(self._own_temp_prefix):
                if len(self._own_renames) > 1000:  # "to"s never seen: renamed out of the watch
                    self._own_renames.clear()
                self._own_renames.add(event.cookie)
                return True
            if event.is_moved_to and event.cookie in self._own_renames:
                self._own_renames.discard(event.cookie)
                return True
            return False

        def _of_an_object(self, event):
            path = self._build_event_source_path(event)
            return path is not None and object_of(os.fsdecode(self.path), os.fsdecode(path))

    class _OnceEmitter(InotifyEmitter):
        def on_thread_start(self):  # watchdog 7.1's, with our watch group
            self._inotify = _OnceWatchGroup(
                self._inotify_fd,
                os.fsencode(self.watch.path),
                is_recursive=self.watch.is_recursive,
                event_mask=self.get_event_mask_from_filter(),
                follow_symlink=self.watch.follow_symlink,
            )


class FileWatcher(FileSystemEventHandler):
    """Watches a store's folder; ``on_adopted(parent, kind, id)`` is told of each
    edit, and of each event in a list whose index was not in memory: a list
    read from disk now has nothing to compare the files with (its load
    repairs what the journal missed), so the object may have been edited."""

    def __init__(self, store, on_adopted=lambda parent, kind, object_id: None):
        self.store = store
        self.on_adopted = on_adopted
        self._pending = set()
        self._new_folders = set()  # folders created since the last batch, to walk
        self._last_event = 0.0  # monotonic time of the latest event (the quiet wait)
        self._missing = {}  # target -> time.monotonic() when its absence becomes a deletion
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
        if isinstance(event, DirCreatedEvent):
            # Delivered once watchdog watches the folder (and the folders in
            # it): a walk from now on misses nothing written before.
            with self._wake:
                self._new_folders.add(os.fsdecode(event.src_path))
                self._last_event = time.monotonic()
                self._wake.notify()
        for path in (event.src_path, getattr(event, "dest_path", "")):
            target = object_of(self.store.root, os.fsdecode(path)) if path else None
            if target:
                with self._wake:
                    self._pending.add(target)
                    self._last_event = time.monotonic()
                    self._wake.notify()

    def _run(self):
        while self._wait_for_work():
            # Let an editor or a copy finish its writes before we read the
            # files: until events have stopped for QUIET_SECONDS (each event
            # notifies, so the wait is measured from the last one), but no
            # longer than SETTLE_SECONDS.  A burst read half-written would be
            # two revisions of one copied object (its data, then its ACL).
            latest = time.monotonic() + SETTLE_SECONDS
            with self._wake:
                while not self._stopping:
                    now = time.monotonic()
                    left = min(self._last_event + QUIET_SECONDS, latest) - now
                    if left <= 0:
                        break
                    self._wake.wait(left)
                batch, self._pending = self._pending, set()
                folders, self._new_folders = self._new_folders, set()
            batch |= _objects_in(self.store.root, folders)
            # Sorted, parents first: a new collection before its records.
            for target in sorted(batch):
                self._handle(target, fresh_event=True)
            for target in self._grace_over():
                self._handle(target, fresh_event=False)

    def _wait_for_work(self):
        """Block until events come or a missing file's grace ends; False once stopping."""
        with self._wake:
            while not self._pending and not self._new_folders and not self._stopping:
                timeout = self._seconds_to_next_grace_end()
                if timeout == 0:
                    break
                self._wake.wait(timeout)
            return not self._stopping

    def _seconds_to_next_grace_end(self):
        """None when no file is missing (wait for events only), else >= 0."""
        if not self._missing:
            return None
        return max(0.0, min(self._missing.values()) - time.monotonic())

    def _grace_over(self):
        now = time.monotonic()
        return sorted(target for target, ends in self._missing.items() if ends <= now)

    def _handle(self, target, fresh_event):
        """Adopt what happened to ``target``; a fresh disappearance waits for its grace."""
        parent, kind, object_id = target
        try:
            object_list = self._list_of(parent, kind)
            if object_list is None:
                self._missing.pop(target, None)
                return
            # Not held: dropped by the memory budget, or never read.
            known = self.store.holds(parent, kind)
            if fresh_event and _lost_a_file(object_list, object_id):
                # Restarted by every event: an editor still busy with it is not done.
                self._missing[target] = time.monotonic() + DELETE_GRACE_SECONDS
                adopted = False
            else:
                self._missing.pop(target, None)
                adopted = object_list.adopt_edit(object_id)
            if adopted:
                logger.info("adopted a change made by hand to %s %r", kind, object_id)
            if adopted or not known:
                self.on_adopted(parent, kind, object_id)
        except Exception:  # a watcher must outlive any odd file
            self._missing.pop(target, None)
            logger.exception("could not adopt a change to %s %r", kind, object_id)

    def _list_of(self, parent, kind):
        """The list the object belongs to, or None: not a folder of ours, or its parent is gone."""
        try:
            self.store.folder_of(parent, kind)
        except ValueError:
            return None  # a folder no id could name
        if parent and not self.store.exists(parent):
            return None
        return self.store.list(parent, kind)


def _objects_in(root, folders):
    """The objects with a file under any of ``folders`` (new folders, see EVENTS).

    A folder inside another of ``folders`` is walked with it, once: watchdog
    reports the folders it finds in a new folder as created too.  Folders
    whose name starts with ``.`` or ``_`` hold no object (no id starts so:
    temp, trash, quarantine) and are not walked.
    """
    found = set()
    walked = []
    for folder in sorted(folders):
        if os.path.basename(folder).startswith((".", "_")) or any(
            folder.startswith(top + os.sep) for top in walked
        ):
            continue
        walked.append(folder)
        for current, subfolders, files in os.walk(folder):
            subfolders[:] = [name for name in subfolders if not name.startswith((".", "_"))]
            for name in files:
                target = object_of(root, os.path.join(current, name))
                if target:
                    found.add(target)
    return found


def _lost_a_file(object_list, object_id):
    """True if a live object's data file, or the ACL sidecar of one with
    permissions, is missing or empty: maybe only for a moment (an editor's
    save, `tar -x` or `cp` writing it)."""
    known = object_list.get(object_id)
    if known is None:
        return False  # nothing to delete: a file that came and went, or already adopted
    if not _has_content(object_list.data_path(object_id)):
        return True
    return bool(known.acl) and not _has_content(object_list.acl_path(object_id))


def _has_content(path):
    try:
        return os.stat(path).st_size > 0
    except OSError:
        return False
