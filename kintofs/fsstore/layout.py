"""The shape of a whole data directory, for tools that walk all of it.

The daemon only ever opens the lists it is asked about; ``kintofs check`` and
``kintofs backup`` visit every one.  The tree alternates two levels::

    root                     _format.json, _lock, _userid_hmac_secret
      buckets/               a list folder: _journal.jsonl, _lock, objects
        blog/                a container object folder: _bucket.json, _bucket.acl
          collections/       a list folder again ...
          groups/            ... with leaf objects: editors.json, editors.acl

A list folder is named by the plural of its kind (``PLURALS``).  Names that
start with ``.`` are never data: a write in progress (``.tmp-``), a deleted
container being removed (``.trash-``), a heartbeat probe (``.heartbeat-``).
"""

import os
from typing import NamedTuple

from ..kinds import KINDS

# What storage needs to know of each kind (kintofs/kinds.py, the one table):
# the folder name of its lists, whether its objects hold lists, its ids.
PLURALS = {name: kind.plural for name, kind in KINDS.items()}
CONTAINERS = {name for name, kind in KINDS.items() if kind.container}
KIND_OF_PLURAL = {plural: kind for kind, plural in PLURALS.items()}


def valid_id_for(kind):
    return KINDS[kind].valid_id  # one function per kind, shared by every list of that kind


# -- an object's files, in its list's folder ---------------------------------
# A leaf object is "<id>.json" with its ACL sidecar "<id>.acl"; a container
# object is the folder "<id>/" holding "_<kind>.json" and "_<kind>.acl".


def data_path(folder, kind, container, object_id):
    if container:
        return os.path.join(folder, object_id, f"_{kind}.json")
    return os.path.join(folder, f"{object_id}.json")


def acl_path(folder, kind, container, object_id):
    if container:
        return os.path.join(folder, object_id, f"_{kind}.acl")
    return os.path.join(folder, f"{object_id}.acl")


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
        elif entry.name.endswith(".json") and entry.is_file(follow_symlinks=False):
            object_id = entry.name[: -len(".json")]
            if valid_id(object_id):
                ids.append(object_id)
    return ids


# Where `kintofs check --repair` moves files it cannot read, for the operator
# to look at; a name starting with "_" is never an id, so lists ignore it.
QUARANTINE = "_quarantine"


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
        return f"_{self.kind}.json"

    def acl_name(self):
        return f"_{self.kind}.acl"

    def data_path(self, object_id):
        return data_path(self.path, self.kind, self.container, object_id)

    def acl_path(self, object_id):
        return acl_path(self.path, self.kind, self.container, object_id)


# A record's attached file (the attachment plugin) lies beside its data file:
# "<id>.attachment", and with keep_old_files its earlier ones are kept as
# "<id>.<sha256>.attachment".  Ids hold no dots, so no object's own files
# ("<id>.json", "<id>.acl") can have these names.
ATTACHMENT_SUFFIX = ".attachment"


def attachment_path(list_folder, object_id):
    return os.path.join(list_folder, object_id + ATTACHMENT_SUFFIX)


def kept_attachment_path(list_folder, object_id, sha256):
    return os.path.join(list_folder, f"{object_id}.{sha256}{ATTACHMENT_SUFFIX}")


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


def is_dot_name(name):
    """Names that are never data (temp files, trash, probes)."""
    return name.startswith(".")


def _entries(folder):
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return []  # deleted meanwhile (by a daemon deleting a container)
