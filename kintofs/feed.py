"""The change feed: one :class:`Change` per change, told to subscribers twice.

Every create, update and delete the API makes is published as a Change, the
same way for the three actions, at two moments:

``IN_COMMIT``
    inside the commit, before it is durable (fsstore/commit.py): the list
    is locked, the write is visible to this thread only, and every write a
    subscriber makes here joins the same commit, so that it is stored with
    the change or not at all (the history entry).  An exception undoes the
    whole commit and fails the request.
``AFTER_COMMIT``
    once the commit is durable and its lists are unlocked, before the
    client is answered: work that must not hold up other writers or that
    must only happen to stored changes (the group-membership index,
    removing an attachment's file; later, push streams).  An exception is
    logged, never answered: the change has happened.  An undone commit
    (a refused write, an aborted batch) tells nothing at this moment.

This module knows nothing of HTTP or files: subscribers get plain values.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import kinds

logger = logging.getLogger(__name__)

IN_COMMIT = "in_commit"
AFTER_COMMIT = "after_commit"
ACTIONS = ("create", "update", "delete")


@dataclass(frozen=True)
class Change:
    """One object created, updated or deleted.

    ``old`` and ``new`` are ``(data, acl)`` pairs or None: ``old`` is None
    on create; on delete ``new`` is the tombstone with an empty ACL.
    ``userid`` is who made it (None for an anonymous caller).
    """

    action: str
    kind: str
    parent: kinds.Path
    id: str
    old: tuple[dict[str, Any], dict[str, list[str]]] | None
    new: tuple[dict[str, Any], dict[str, list[str]]]
    timestamp: int
    userid: str | None = None

    @property
    def path(self) -> kinds.Path:
        return (*self.parent, (self.kind, self.id))

    @property
    def uri(self) -> str:
        return kinds.uri(self.path)

    @property
    def data(self) -> dict[str, Any]:
        """The object as it is now (a tombstone after a delete)."""
        return self.new[0]

    @property
    def acl(self) -> dict[str, list[str]]:
        return self.new[1]


Subscriber = Callable[[Change], None]


class ChangeFeed:
    def __init__(self) -> None:
        self._subscribers: dict[str, list[Subscriber]] = {IN_COMMIT: [], AFTER_COMMIT: []}

    def subscribe(self, subscriber: Subscriber, moment: str = AFTER_COMMIT) -> None:
        """Call ``subscriber(change)`` at ``moment`` (IN_COMMIT or AFTER_COMMIT) of every change."""
        self._subscribers[moment].append(subscriber)

    def in_commit(self, change: Change) -> None:
        for subscriber in self._subscribers[IN_COMMIT]:
            subscriber(change)

    def after_commit(self, change: Change) -> None:
        for subscriber in self._subscribers[AFTER_COMMIT]:
            try:
                subscriber(change)
            except Exception:  # the change is made: it must not look failed
                logger.exception("a subscriber failed after %s of %s", change.action, change.uri)
