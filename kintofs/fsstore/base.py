"""The storage contract: what the rest of kintofs may ask of a store.

A store keeps *lists* of objects.  A list is addressed by its parent (a tuple
of ``(kind, id)`` pairs from the root, e.g. ``(("bucket", "blog"),)``) and the
kind of its objects (``"collection"``).  Every object has a JSON ``data``
document (which always carries ``id`` and ``last_modified``) and an ``acl``
document, opaque to the store, that the ACL layer interprets.

Each list keeps a timestamp (the largest ``last_modified`` it ever assigned)
and tombstones of deleted objects.  Writes to one list are serialised, also
across processes, by :meth:`ObjectList.transaction`.

Nothing here knows about HTTP.
"""

from typing import NamedTuple


class StorageError(Exception):
    """Base class of everything the storage layer raises on purpose."""


class ParentNotFound(StorageError):
    """The container a list lives in does not exist (any more)."""


class StorageBusy(StorageError):
    """A lock could not be taken in time; the caller may retry later."""


class StorageFull(StorageError):
    """The disk refused a write (no space, read-only, quota)."""


class Stored(NamedTuple):
    """One live object as kept on disk."""

    data: dict
    acl: dict


def tombstone(object_id, last_modified):
    """The three-field tombstone Kinto returns for a deleted object."""
    return {"id": object_id, "last_modified": last_modified, "deleted": True}


class ObjectList:
    """Contract of one list of objects (documentation; see fsstore.listing)."""

    __slots__ = ()

    def get(self, object_id):
        """The :class:`Stored` object, or None if absent or deleted."""
        raise NotImplementedError

    def objects(self):
        """A snapshot ``{id: Stored}`` of every live object."""
        raise NotImplementedError

    def tombstones(self):
        """A snapshot ``{id: last_modified}`` of deleted objects."""
        raise NotImplementedError

    def timestamp(self):
        """The list timestamp; a never-written list gets "now", kept from then on."""
        raise NotImplementedError

    def derived(self, key, build, use):
        """``use(view)`` of a view of the live objects the list keeps current
        (an index of one sort order), or None where it keeps none."""
        raise NotImplementedError

    def transaction(self):
        """Context manager yielding a writer; the list is locked while it is open."""
        raise NotImplementedError
