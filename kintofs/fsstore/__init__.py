"""File-system storage for kintofs: folders and JSON files, nothing else.

Public names: :class:`FileSystemStore` and the contract in :mod:`.base`.
This package imports nothing from the HTTP or ACL layers.
"""

from .base import ParentNotFound, StorageBusy, StorageError, StorageFull, Stored, tombstone
from .store import CONTAINERS, PLURALS, FileSystemStore

__all__ = [
    "CONTAINERS",
    "PLURALS",
    "FileSystemStore",
    "ParentNotFound",
    "StorageBusy",
    "StorageError",
    "StorageFull",
    "Stored",
    "tombstone",
]
