"""The order in which a list's objects last changed, for `_since` and the default order.

Each id has one current change: the ``last_modified`` of its live version or
the timestamp of its tombstone.  :class:`ChangeOrder` keeps the pairs
``(ts, id)`` sorted, so that "what changed after T" costs a binary search plus
the number of changes, and "newest first" (Kinto's default order) is a walk
from the end that can stop after one page.

Timestamps mostly arrive in increasing order (appends), but a client may force
a past ``last_modified``, and another process's lines arrive in its own order:
those pairs are inserted at their place.  A pair replaced by a newer change of
the same id is not searched for and removed: it stays as a stale pair, skipped
while walking, until stale pairs outnumber the live ones and the list is rebuilt.
"""

import bisect
import operator
import threading

# Rebuild once this many more stale pairs than ids have piled up.
STALE_SLACK = 1000

_timestamp_of = operator.itemgetter(0)


class ChangeOrder:
    __slots__ = ("_latest", "_pairs", "_stale", "_guard")

    def __init__(self, changes=()):
        """``changes``: ``(id, ts)`` pairs, one per id."""
        self._latest = dict(changes)
        self._pairs = sorted((ts, object_id) for object_id, ts in self._latest.items())
        self._stale = 0
        # Held only to search and slice, or to insert: never while a caller walks.
        self._guard = threading.Lock()

    def __len__(self):
        return len(self._latest)

    def pair_count(self):
        """How many pairs are kept, stale ones included (memory accounting)."""
        return len(self._pairs)

    def record(self, object_id, ts):
        """``object_id`` changed at ``ts`` (its new version or its tombstone)."""
        previous = self._latest.get(object_id)
        if previous == ts:
            return
        pair = (ts, object_id)
        with self._guard:
            self._latest[object_id] = ts
            pairs = self._pairs
            if not pairs or pair > pairs[-1]:
                pairs.append(pair)
            else:
                # A past timestamp: its place may already hold this very pair,
                # left stale by an earlier change of the same id.
                index = bisect.bisect_left(pairs, pair)
                if index == len(pairs) or pairs[index] != pair:
                    pairs.insert(index, pair)
            if previous is not None:
                self._stale += 1
            if self._stale > len(self._latest) + STALE_SLACK:
                self._pairs = sorted((t, i) for i, t in self._latest.items())
                self._stale = 0

    def newest_first(self, since=None, until=None):
        """``(id, ts)`` with ``since < ts <= until``, newest first (ties: larger id first).

        Walks a copy of the matching slice only, so writers never wait for a
        reader; a change made meanwhile may or may not be seen.
        """
        with self._guard:
            pairs = self._pairs
            low = 0 if since is None else bisect.bisect_right(pairs, since, key=_timestamp_of)
            high = (
                len(pairs)
                if until is None
                else bisect.bisect_right(pairs, until, key=_timestamp_of)
            )
            window = pairs[low:high]
        latest = self._latest
        for ts, object_id in reversed(window):
            if latest.get(object_id) == ts:
                yield object_id, ts
