"""The disk format in one module: every name kintofs keeps for itself, and the tree.

The daemon only ever opens the lists it is asked about; ``kintofs check`` and
``kintofs backup`` visit every one.  The tree alternates two levels::

    root                     _format.json, _lock, _userid_hmac_secret
      buckets/               a list folder: _journal.jsonl, _lock, objects
        blog/                a container object folder: _bucket.json, _bucket.acl
          collections/       a list folder again ...
          groups/            ... with leaf objects: editors.json, editors.acl

A list folder is named by the plural of its kind (``PLURALS``).  Ids start
with a letter or digit, so every reserved name starts with ``_`` or ``.``;
names that start with ``.`` are never data: a write in progress (``.tmp-``),
a deleted container being removed (``.trash-``), a heartbeat probe
(``.heartbeat-``).  This module imports nothing of the store: every other
module of it may import this one.
"""

import os
import re
from typing import NamedTuple

from ..kinds import KINDS

# What storage needs to know of each kind (kintofs/kinds.py, the one table):
# the folder name of its lists, whether its objects hold lists, its ids.
PLURALS = {name: kind.plural for name, kind in KINDS.items()}
CONTAINERS = {name for name, kind in KINDS.items() if kind.container}
KIND_OF_PLURAL = {plural: kind for kind, plural in PLURALS.items()}


def valid_id_for(kind):
    return KINDS[kind].valid_id  # one function per kind, shared by every list of that kind


# -- reserved names (docs/storage.md, "Names that can never be ids") ---------

FORMAT_FILE = "_format.json"  # the root's format version, holding FORMAT
FORMAT = {"format": "kintofs", "version": 1}
JOURNAL_NAME = "_journal.jsonl"  # in every list folder
LOCK_NAME = "_lock"  # in every list folder and the root

# A big list's index as its last load or stop left it (fsstore/snapshot.py):
# derived, checked before use, deletable at any time; backups leave it out.
SNAPSHOT_NAME = "_index.snapshot"

# Where `kintofs check --repair` moves files it cannot read, for the operator
# to look at; a name starting with "_" is never an id, so lists ignore it.
QUARANTINE = "_quarantine"


def quarantine_folder(root):
    return os.path.join(root, QUARANTINE)


# Leftovers: the dot keeps them out of every list, whatever follows it.
TEMP_PREFIX = ".tmp-"  # an atomic write in progress
UPLOAD_PREFIX = TEMP_PREFIX + "upload-"  # an attachment being received
TRASH_PREFIX = ".trash-"  # a deleted container being removed
HEARTBEAT_PREFIX = ".heartbeat-"  # the heartbeat's write probe, at the root

DATA_SUFFIX = ".json"
ACL_SUFFIX = ".acl"

# A record's attached file (the attachment plugin) lies beside its data file:
# "<id>.attachment", and with keep_old_files its earlier ones are kept as
# "<id>.<sha256>.attachment".  Ids hold no dots, so no object's own files
# ("<id>.json", "<id>.acl") can have these names.
ATTACHMENT_SUFFIX = ".attachment"

# The commit logs of running processes (fsstore/commit.py), at the root:
# "_commits/<random>.jsonl" holds the last commits of one process.  Not data:
# a backup leaves them out, a process that dies leaves one for recovery.
COMMITS_FOLDER = "_commits"
COMMIT_LOG_SUFFIX = ".jsonl"

GENERATION_SUFFIX = ".generation"


def generation_file(name):
    """``_<name>.generation``: a token at the root (fsstore/generation.py)."""
    return f"_{name}{GENERATION_SUFFIX}"


MEMBERSHIPS_GENERATION = generation_file("memberships")

# Webhooks (kintofs/push/webhooks.py), at the root: "_webhooks/<hook key>.json"
# holds the position of the last change each hook delivered, and
# "_webhooks/_lock" is flocked by the one process that delivers them.  Not a
# list (no journal): lists never look at it, a backup copies the positions.
WEBHOOKS_FOLDER = "_webhooks"


def webhooks_folder(root):
    return os.path.join(root, WEBHOOKS_FOLDER)


def webhook_state_path(root, key):
    """Where the hook named ``key`` (hex digits) keeps its last delivered position."""
    return os.path.join(root, WEBHOOKS_FOLDER, key + DATA_SUFFIX)


def webhooks_lock_path(root):
    return os.path.join(root, WEBHOOKS_FOLDER, LOCK_NAME)


# kintofs push/pull (kintofs/mirror), at the root: "_mirror/<key>.json" holds
# what the last run copied, per server and account, and "<key>.json.lock" is
# flocked by the run in progress.  Not a list either; a backup copies it.
MIRROR_FOLDER = "_mirror"


def mirror_state_path(root, key):
    return os.path.join(root, MIRROR_FOLDER, key + DATA_SUFFIX)


def secret_file(name):
    """``_<name>``: a secret generated once, at the root (``_userid_hmac_secret``)."""
    return f"_{name}"


def is_dot_name(name):
    """Names that are never data (temp files, trash, probes)."""
    return name.startswith(".")


def is_never_copied(name):
    """What no copy of a data directory needs: lock files and dot names.

    ``kintofs backup`` and ``kintofs restore`` leave these out: a lock file
    is recreated on first use, a dot name is a leftover or a write in progress,
    the commit logs only matter to the files they were written beside, and
    an index snapshot is rebuilt from the files.
    """
    return name in (LOCK_NAME, COMMITS_FOLDER, SNAPSHOT_NAME) or is_dot_name(name)


def is_bookkeeping(name):
    """A list folder's own files (journal, lock, snapshot) or a leftover: never an object."""
    return is_dot_name(name) or name in (JOURNAL_NAME, LOCK_NAME, SNAPSHOT_NAME)


# -- an object's files, in its list's folder ---------------------------------
# A leaf object is "<id>.json" with its ACL sidecar "<id>.acl"; a container
# object is the folder "<id>/" holding "_<kind>.json" and "_<kind>.acl".


def container_data_name(kind):
    return f"_{kind}{DATA_SUFFIX}"


def container_acl_name(kind):
    return f"_{kind}{ACL_SUFFIX}"


def data_name(kind, container, object_id):
    """An object's data file, relative to its list folder."""
    if container:
        return os.path.join(object_id, container_data_name(kind))
    return object_id + DATA_SUFFIX


def acl_name(kind, container, object_id):
    """An object's ACL sidecar, relative to its list folder."""
    if container:
        return os.path.join(object_id, container_acl_name(kind))
    return object_id + ACL_SUFFIX


def data_path(folder, kind, container, object_id):
    return os.path.join(folder, data_name(kind, container, object_id))


def acl_path(folder, kind, container, object_id):
    return os.path.join(folder, acl_name(kind, container, object_id))


def id_with_suffix(name, suffix, valid_id):
    """The id of a leaf list's file ``<id><suffix>``, or None for any other name."""
    if not name.endswith(suffix):
        return None
    object_id = name[: -len(suffix)]
    return object_id if valid_id(object_id) else None


def scan_ids(folder, container, valid_id):
    """The ids of the objects a list folder holds (by their files), in no order."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    ids = []
    for entry in entries:
        if container:
            if entry.is_dir(follow_symlinks=False) and valid_id(entry.name):
                ids.append(entry.name)
        elif entry.is_file(follow_symlinks=False):
            object_id = id_with_suffix(entry.name, DATA_SUFFIX, valid_id)
            if object_id is not None:
                ids.append(object_id)
    return ids


def named_ids(folder, valid_id):
    """The ids that a leaf list folder's ``<id>.json`` names claim, in name order.

    Unlike :func:`scan_ids` (what the daemon loads: regular files only), any
    type of entry counts, so that ``kintofs check`` reports a folder or a
    socket named ``r1.json`` instead of passing over it.
    """
    try:
        names = sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    claimed = (id_with_suffix(name, DATA_SUFFIX, valid_id) for name in names)
    return [object_id for object_id in claimed if object_id is not None]


class ListFolder(NamedTuple):
    """One list of the tree: its folder and the kind of its objects."""

    path: str
    kind: str

    @property
    def container(self):
        return self.kind in CONTAINERS

    def valid_id(self, value):
        return valid_id_for(self.kind)(value)

    def data_name(self):
        """The data file's name inside a container object's folder."""
        return container_data_name(self.kind)

    def acl_name(self):
        return container_acl_name(self.kind)

    def data_path(self, object_id):
        return data_path(self.path, self.kind, self.container, object_id)

    def acl_path(self, object_id):
        return acl_path(self.path, self.kind, self.container, object_id)

    def named_ids(self):
        """The ids its entries claim: object folders, or ``<id>.json`` names (any type)."""
        if self.container:
            return list(object_folders(self))
        return named_ids(self.path, self.valid_id)


def attachment_path(list_folder, object_id):
    return os.path.join(list_folder, object_id + ATTACHMENT_SUFFIX)


def kept_attachment_path(list_folder, object_id, sha256):
    return os.path.join(list_folder, f"{object_id}.{sha256}{ATTACHMENT_SUFFIX}")


def is_temp_name(name):
    """A name a write in progress may have (checked before a commit log is trusted)."""
    return isinstance(name, str) and name.startswith(TEMP_PREFIX) and os.sep not in name


def is_upload_name(name):
    """A name an upload in progress may have (checked before a commit log is trusted)."""
    return isinstance(name, str) and name.startswith(UPLOAD_PREFIX) and os.sep not in name


def is_kept_attachment_name(object_id, name):
    return (
        isinstance(name, str)
        and re.fullmatch(
            re.escape(object_id) + r"\.[0-9a-f]{64}" + re.escape(ATTACHMENT_SUFFIX), name
        )
        is not None
    )


def lists_in(folder):
    """The list folders directly inside ``folder`` (the root or a container object)."""
    found = []
    for entry in _entries(folder):
        kind = KIND_OF_PLURAL.get(entry.name)
        if kind and entry.is_dir(follow_symlinks=False):
            found.append(ListFolder(entry.path, kind))
    return sorted(found)


def object_folders(list_folder):
    """``{id: path}`` of the container object folders of a container list."""
    return {
        entry.name: entry.path
        for entry in _entries(list_folder.path)
        if entry.is_dir(follow_symlinks=False) and list_folder.valid_id(entry.name)
    }


def _entries(folder):
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return []  # deleted meanwhile (by a daemon deleting a container)


# -- from a path back to its object (the file watcher) --------------------------


def object_of(root, path):
    """``(parent, kind, id)`` of the object a path under ``root`` belongs to, or None.

    ``buckets/b/collections/c/records/r1.json`` -> ``((("bucket", "b"),
    ("collection", "c")), "record", "r1")``; ``buckets/b/_bucket.json`` and
    the folder ``buckets/b`` itself -> ``((), "bucket", "b")``.  Journals,
    locks, dot names, attachments and root files belong to no object.  Ids
    are not checked here: whoever acts on the answer validates them.
    """
    relative = os.path.relpath(path, root)
    if relative.startswith(".."):
        return None  # outside the data directory
    parts = relative.split(os.sep)
    if is_bookkeeping(parts[-1]):
        return None
    if len(parts) % 2:  # odd depth: a file inside a container's folder
        return _container_file(parts)
    return _in_list_folder(parts)


def _in_list_folder(parts):
    """A container's folder, or a leaf object's data or ACL file, in its list folder."""
    kind, name = KIND_OF_PLURAL.get(parts[-2]), parts[-1]
    if kind in CONTAINERS:
        return _with_parent(parts[:-2], kind, name)
    stem, dot, suffix = name.rpartition(".")
    if kind and dot and "." + suffix in (DATA_SUFFIX, ACL_SUFFIX):
        return _with_parent(parts[:-2], kind, stem)
    return None


def _container_file(parts):
    """``_bucket.json`` / ``_collection.acl`` inside a container's folder."""
    kind = KIND_OF_PLURAL.get(parts[-3]) if len(parts) >= 3 else None
    if kind in CONTAINERS and parts[-1] in (container_data_name(kind), container_acl_name(kind)):
        return _with_parent(parts[:-3], kind, parts[-2])
    return None


def _with_parent(parent_parts, kind, object_id):
    """Pair up ``(plural, id)`` folders into a parent path; None unless all are containers."""
    if len(parent_parts) % 2:
        return None
    parent = []
    for plural, parent_id in zip(parent_parts[::2], parent_parts[1::2], strict=True):
        parent_kind = KIND_OF_PLURAL.get(plural)
        if parent_kind not in CONTAINERS:
            return None
        parent.append((parent_kind, parent_id))
    return tuple(parent), kind, object_id


# -- beside the data directory: backups and restores in progress ---------------
# A backup is written to ".<dest name>.partial-<8 hex>" next to its
# destination, a restore to ".<data dir name>.restoring-<8 hex>" next to the
# data directory: the same file system, so the final rename is atomic.  Each
# holds LOCK_NAME, flocked by the process filling it while it lives.

BACKUP_STAGING = "partial"
RESTORE_STAGING = "restoring"
MOVED_ASIDE = ".before-restore-"  # "<data dir>.before-restore-<time>", kept by restore --force
STAGING_TOKEN_LENGTH = 8


def staging_name(name, purpose, token):
    """``.<name>.<purpose>-<token>``: where ``name`` is being made."""
    return f".{name}.{purpose}-{token}"


def is_staging_of(entry_name, name, purpose):
    """True if ``entry_name`` is a staging name of ``name`` for ``purpose``."""
    token = f"[0-9a-f]{{{STAGING_TOKEN_LENGTH}}}"
    return re.fullmatch(re.escape(staging_name(name, purpose, "")) + token, entry_name) is not None
