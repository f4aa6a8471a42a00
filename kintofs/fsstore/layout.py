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

from .store import CONTAINERS, PLURALS, valid_id_for

KIND_OF_PLURAL = {plural: kind for kind, plural in PLURALS.items()}

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
