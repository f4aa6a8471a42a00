"""The file-system store: a tree of folders that mirrors Kinto's object URIs.

``/buckets/blog/collections/articles/records/r1`` is stored at
``<data>/buckets/blog/collections/articles/records/r1.json``.  See
docs/storage.md for the whole layout.
"""
import collections
import json
import os
import secrets
import shutil
import threading
import uuid

from .. import ids
from .atomic import check_injected_fault, read_json, write_bytes, write_json
from .base import StorageError
from .generation import Generation
from .listing import TRASH_PREFIX, FileList, now_ms
from .locks import locked, locked_for_reading

FORMAT_FILE = "_format.json"
FORMAT = {"format": "kintofs", "version": 1}

PLURALS = {
    "bucket": "buckets",
    "group": "groups",
    "collection": "collections",
    "record": "records",
    "account": "accounts",
    "history": "history",  # a bucket's change history (history plugin)
}
CONTAINERS = {"bucket", "collection"}
ID_PATTERNS = {"account": ids.ACCOUNT_ID}


def valid_id_for(kind):
    pattern = ID_PATTERNS.get(kind, ids.OBJECT_ID)
    return lambda value: ids.is_valid_id(value, pattern)


class FileSystemStore:
    def __init__(self, root, *, fsync=True, clock=now_ms, max_lists=0):
        """``max_lists``: how many list indexes to keep in memory (0: all);
        beyond it the least recently used one is dropped and reloaded when needed."""
        self.root = os.path.abspath(root)
        self.fsync = fsync
        self.clock = clock
        self.max_lists = max_lists
        self._lists = collections.OrderedDict()
        self._lists_guard = threading.Lock()
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        self._check_format()

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
        folder = self.folder_of(tuple(parent), kind)
        with self._lists_guard:
            found = self._lists.get(folder)
            if found is None:
                found = FileList(
                    folder, kind,
                    container=kind in CONTAINERS,
                    valid_id=valid_id_for(kind),
                    fsync=self.fsync,
                    clock=self.clock,
                    on_container_deleted=self._forget_below,
                )
                self._lists[folder] = found
                if self.max_lists and len(self._lists) > self.max_lists:
                    # A request still holding the dropped list finishes with it;
                    # the file lock keeps two instances of one list consistent.
                    self._lists.popitem(last=False)
            else:
                self._lists.move_to_end(folder)
            return found

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
                del self._lists[folder]

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
                self._lists.clear()

    def generation(self, name):
        """The :class:`Generation` token ``name`` (derived-data invalidation)."""
        return Generation(self.root, name, fsync=self.fsync)

    def persistent_secret(self, name):
        """A random secret generated once and kept in ``_<name>`` (owner-only)."""
        path = os.path.join(self.root, f"_{name}")
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
            probe = os.path.join(self.root, f".heartbeat-{uuid.uuid4().hex}")
            with open(probe, "wb") as f:
                f.write(b"ok")
            os.unlink(probe)
            return True
        except OSError:
            return False

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
