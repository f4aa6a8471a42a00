"""Generation tokens: a cheap "did anything of this sort change?" across processes.

A generation is a small JSON file ``_<name>.generation`` in the data folder
holding a random token, ``{"token": "..."}``.  Whoever changes data that other processes index (group
memberships, say) writes a new token under the root lock; a reader compares
the token with the one its index was built from, one small read per use.

Tokens are random rather than counters so that a deleted-then-recreated file
can never bring an old value back (no ABA).  A missing file reads as None.
Deleting the file is safe: every process then rebuilds its index once.
"""

import os
import uuid

from .atomic import read_json, write_json
from .layout import generation_file
from .locks import locked


class Generation:
    def __init__(self, root, name, *, fsync=True):
        self.root = root
        self.path = os.path.join(root, generation_file(name))
        self.fsync = fsync

    def current(self):
        """The token now on disk, or None when there is none yet."""
        try:
            document = read_json(self.path)
        except ValueError:
            return "unreadable"  # differs from every token: readers rebuild, the next bump mends it
        return document.get("token") if isinstance(document, dict) else None

    def bump(self):
        """Write a fresh token; ``(previous, new)``.

        The root lock makes "read previous, write new" one step, so a caller
        whose index was built from ``previous`` knows no other process
        changed anything in between.
        """
        with locked(self.root):
            previous = self.current()
            new = uuid.uuid4().hex
            write_json(self.path, {"token": new}, fsync=self.fsync)
            return previous, new
