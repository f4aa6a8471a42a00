"""The hub: changes read from the lists, sent to the streams that may read them.

A *scope* is what a stream follows: everything (the buckets, and all below
them), one bucket (its groups, its collections and their records) or one
collection (its records).  Accounts and history entries are never streamed.

How a change becomes an event
    The hub is woken with the list that changed (the change feed after a
    commit, the watcher after a hand edit, or its own poll of the lists its
    streams follow, which sees other processes' writes).  It reads the list's
    changes since the last one it handled (its *cursor*), through the list's
    change order, the one ``_since`` uses: so an event is always something
    stored, and a list's events come in its timestamp order.  Like ``_since``
    (and CouchDB's ``_changes``), two changes of one object that the hub
    reads at once are one event, with the object as it is now.

Positions and resuming
    A collection's stream says ``id: <ts>``, its records' timestamps, which
    are unique and increasing in the list.  Streams over several lists say
    ``id: <ts>:<uri>``: events are ordered by timestamp, then URI, and the
    hub holds an event back while a commit of this process that may still
    get an earlier timestamp is in flight, so that this order is never
    broken.  A subscriber that comes back with ``Last-Event-ID`` (or
    ``_since=<ts>``) first gets, from the lists, every change after that
    position up to where the live events start, then the live ones: nothing
    is lost or repeated between reconnects.  (A change made by another
    process reaches the streams within a poll interval; on a stream over
    several lists, it may come after later changes of this process, and a
    subscriber resuming in between would not get it.)

Permissions
    Checked when an event is sent, with the subscriber's principals as they
    are then (group memberships included): a grant or a revocation takes
    effect on live streams at once.  A deletion is sent to those who may
    read the deleted object's parent (a tombstone has no ACL of its own,
    as in Kinto's lists).
"""

from __future__ import annotations

import heapq
import logging
import threading
import time

from .. import acl, kinds
from ..acl.principals import principals_of

logger = logging.getLogger(__name__)

STREAMED_KINDS = ("bucket", "group", "collection", "record")
POLL_SECONDS = 1.0  # how often the followed lists are looked at (other processes' writes)


class Scope:
    """What a stream follows: ``bucket`` and ``collection`` ids, or None."""

    __slots__ = ("bucket", "collection")

    def __init__(self, bucket=None, collection=None):
        self.bucket, self.collection = bucket, collection

    @property
    def single_list(self):
        """The one list a collection's stream follows, as ``(parent, kind)``."""
        if self.collection is None:
            return None
        return ((("bucket", self.bucket), ("collection", self.collection)), "record")

    def covers(self, parent, kind):
        """Does the list of ``kind`` objects under ``parent`` belong to this scope?"""
        if kind not in STREAMED_KINDS:
            return False
        if self.bucket is None:
            return True
        ids = dict(parent)
        if self.collection is None:
            return ids.get("bucket") == self.bucket
        return kind == "record" and ids == {"bucket": self.bucket, "collection": self.collection}

    def lists(self, store):
        """The lists this scope follows now, as ``(parent, kind)`` pairs."""
        if self.collection is not None:
            return [self.single_list]
        buckets = [self.bucket] if self.bucket is not None else _ids(store, (), "bucket")
        found = [((), "bucket")] if self.bucket is None else []
        for bucket in buckets:
            in_bucket = (("bucket", bucket),)
            found += [(in_bucket, "group"), (in_bucket, "collection")]
            for collection in _ids(store, in_bucket, "collection"):
                found.append(((*in_bucket, ("collection", collection)), "record"))
        return found


def _ids(store, parent, kind):
    try:
        return sorted(store.list(parent, kind).objects())
    except Exception:  # a container deleted meanwhile
        return []


class Event:
    """One change as streams tell it."""

    __slots__ = ("ts", "action", "kind", "parent", "id", "data", "acl", "_ancestors", "_encoded")

    def __init__(self, ts, action, kind, parent, object_id, data, object_acl=None):
        self.ts, self.action, self.kind, self.parent = ts, action, kind, parent
        self.id, self.data, self.acl = object_id, data, object_acl or {}
        self._ancestors = self._encoded = None

    def ancestors_acls(self, store):
        """``{kind: acl}`` of the ancestors, read once (None if one is gone)."""
        if self._ancestors is None:
            acls = {}
            for depth, (kind, _) in enumerate(self.parent):
                *above, (parent_kind, parent_id) = self.parent[: depth + 1]
                stored = store.get(tuple(above), parent_kind, parent_id)
                if stored is None:
                    self._ancestors = False
                    return None
                acls[kind] = stored.acl
            self._ancestors = acls
        return None if self._ancestors is False else self._ancestors

    def encoded(self, single_list, encode):
        """``encode(self, single_list)``, done once for all the streams of one kind."""
        if self._encoded is None:
            self._encoded = {}
        if single_list not in self._encoded:
            self._encoded[single_list] = encode(self, single_list)
        return self._encoded[single_list]

    @property
    def path(self):
        return (*self.parent, (self.kind, self.id))

    @property
    def uri(self):
        return kinds.uri(self.path)

    def order(self):
        return (self.ts, self.uri)

    def position(self, single_list):
        return str(self.ts) if single_list else f"{self.ts}:{self.uri}"

    def body(self):
        return {
            "action": self.action,
            "uri": self.uri,
            "resource_name": self.kind,
            "data": self.data,
            "timestamp": self.ts,
        }


def parse_position(text):
    """``(ts, uri)`` of a ``Last-Event-ID`` or ``_since`` value; ``uri`` may be
    "" (``_since``: every change after ``ts``).  None if it is not one."""
    if not isinstance(text, str):
        return None
    ts_text, _, uri = text.strip().strip('"').partition(":")
    try:
        ts = int(ts_text)
    except ValueError:
        return None
    return ts, uri


class Subscriber:
    """One stream, webhook or other follower of a scope.

    ``send(event)`` takes an event (quickly: it is called on the hub's
    thread) and returns False when the subscriber has fallen behind, which
    unsubscribes it; ``close()`` is called then, or at :meth:`Hub.stop`.
    ``userid`` is whose read permission filters the events (None: anonymous);
    ``sees_everything``: no filter (what the operator configured, a webhook).
    """

    def __init__(self, scope, userid, send, close, *, sees_everything=False):
        self.scope, self.userid = scope, userid
        self.send, self.close = send, close
        self.sees_everything = sees_everything
        self.single_list = scope.single_list is not None


class Hub:
    def __init__(self, store, settings, groups_of, clock=None):
        self.store, self.settings, self.groups_of = store, settings, groups_of
        clock = clock or (lambda: time.time_ns() // 1_000_000)
        self._start = clock()  # lists never read: their changes since now are new
        self._guard = threading.RLock()
        self._cursors = {}  # (parent, kind) -> ts of the last change handled
        self._subscribers = []
        self._held = []  # heap of (order, id, Event): wide-stream events waiting for earlier commits
        self._released = (self._start, "")  # the order up to which multi-list events went out
        self._actions = {}  # (uri, ts) -> action, told by the change feed before its wake
        self._dirty = {}  # (parent, kind) -> True: lists to read, in the order they changed
        self._wakeup = threading.Condition()
        self._thread = None
        self._stopped = False
        self._principals = {}  # userid -> principals, for one batch of events

    # -- waking (any thread; the work is done on the hub's own) -----------------

    def changed(self, parent, kind, object_id=None, ts=None, action=None):
        """The list of ``kind`` under ``parent`` has changed."""
        if kind not in STREAMED_KINDS or not self._subscribers:
            return
        with self._wakeup:
            if action is not None and object_id is not None:
                self._actions[(kinds.uri((*parent, (kind, object_id))), ts)] = action
            self._dirty[(tuple(parent), kind)] = True
            self._wakeup.notify()

    def settled(self):
        """A commit of this process ended: held events may go out now."""
        if self._held:
            with self._wakeup:
                self._wakeup.notify()

    def _run(self):
        next_poll = time.monotonic() + POLL_SECONDS
        while True:
            with self._wakeup:
                timeout = next_poll - time.monotonic()
                if self._held:
                    timeout = min(timeout, 0.05)  # a commit that holds them back ends soon
                if not self._dirty and not self._stopped and timeout > 0:
                    self._wakeup.wait(timeout)
                if self._stopped:
                    return
                dirty, self._dirty = list(self._dirty), {}
            if time.monotonic() >= next_poll:
                dirty += [key for key in self._followed() if key not in dirty]
                next_poll = time.monotonic() + POLL_SECONDS
            try:
                with self._guard:
                    self._principals = {}  # memberships as they are now
                    for parent, kind in dirty:
                        self._read_list(parent, kind)
                    self._release()
            except Exception:
                logger.exception("could not push changes")

    def _read_list(self, parent, kind):
        key = (parent, kind)
        cursor = self._cursors.get(key, self._start)
        try:
            changes = list(self.store.list(parent, kind).newest_first(since=cursor))
        except Exception:  # a container deleted meanwhile: its deletion is the event
            return
        if not changes:
            return
        changes.reverse()
        self._cursors[key] = changes[-1][2]
        for object_id, stored, ts in changes:
            event = self._event(parent, kind, object_id, stored, ts)
            for subscriber in list(self._subscribers):
                if subscriber.single_list and subscriber.scope.covers(parent, kind):
                    self._deliver(subscriber, event)
            if stored is None and kind in ("bucket", "collection"):
                self._end_streams_in(event)
            heapq.heappush(self._held, (event.order(), id(event), event))

    def _event(self, parent, kind, object_id, stored, ts):
        uri = kinds.uri((*parent, (kind, object_id)))
        with self._wakeup:
            action = self._actions.pop((uri, ts), None)
        if stored is None:
            return Event(ts, "delete", kind, parent, object_id, _tombstone(object_id, ts))
        return Event(ts, action or "update", kind, parent, object_id, stored.data, stored.acl)

    def _end_streams_in(self, deletion):
        """A bucket or collection is deleted: the streams that follow it (or a
        collection in it) are told, then closed; reconnecting says 404."""
        deleted = dict(deletion.path)
        for subscriber in list(self._subscribers):
            scope = subscriber.scope
            inside = scope.bucket == deleted.get("bucket") and (
                deletion.kind == "bucket" or scope.collection == deleted.get("collection")
            )
            if inside and (scope.collection is not None or deletion.kind == "bucket"):
                self._deliver(subscriber, deletion)
                self.unsubscribe(subscriber)

    def _release(self):
        """Send held multi-list events up to where no commit in flight can come before."""
        oldest = self.store.commits.oldest_in_flight()
        while self._held:
            order, _, event = self._held[0]
            if oldest is not None and event.ts >= oldest:
                break
            heapq.heappop(self._held)
            self._released = max(self._released, order)
            for subscriber in list(self._subscribers):
                if not subscriber.single_list and subscriber.scope.covers(event.parent, event.kind):
                    self._deliver(subscriber, event)
        if len(self._actions) > 10_000:  # told for changes never read (another scope)
            with self._wakeup:
                self._actions.clear()

    def _deliver(self, subscriber, event):
        if not subscriber.sees_everything and not self.may_read(subscriber.userid, event):
            return
        if not subscriber.send(event):
            self.unsubscribe(subscriber)  # it was told to resync

    # -- subscribing -----------------------------------------------------------

    def subscribe(self, subscriber, position=None):
        """Start ``subscriber``: what it missed since ``position`` first (see
        parse_position), then live events.  Returns False if it fell behind at once."""
        with self._guard:
            self._principals = {}
            # Every list of the scope read up to now first: what changed while
            # nobody followed it is not news to this subscriber (nor sent to it).
            for parent, kind in subscriber.scope.lists(self.store):
                self._read_list(parent, kind)
            self._release()
            if position is not None:
                for event in self._missed(subscriber, position):
                    if not subscriber.sees_everything and not self.may_read(
                        subscriber.userid, event
                    ):
                        continue
                    if not subscriber.send(event):
                        return False
            self._subscribers.append(subscriber)
            self._start_thread()
            return True

    def unsubscribe(self, subscriber):
        with self._guard:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)
        subscriber.close()

    def count(self):
        return len(self._subscribers)

    def _missed(self, subscriber, position):
        """The changes after ``position`` that live events will not bring."""
        after = position if position[1] else (position[0], "\uffff")  # _since: after ts
        events = []
        for parent, kind in subscriber.scope.lists(self.store):
            upto = self._cursors.get((parent, kind), self._start)
            if not subscriber.single_list:
                upto = min(upto, self._released[0])
            try:
                changes = self.store.list(parent, kind).newest_first(since=after[0] - 1, until=upto)
            except Exception:
                continue
            for object_id, stored, ts in changes:
                event = self._event(parent, kind, object_id, stored, ts)
                if subscriber.single_list or event.order() <= self._released:
                    events.append(event)
        events.sort(key=Event.order)
        if subscriber.single_list:
            return [event for event in events if event.ts > position[0]]
        return [event for event in events if event.order() > after]

    # -- permissions -------------------------------------------------------------

    def may_read(self, userid, event):
        """May ``userid`` read the object of ``event`` now?  The ancestors' ACLs
        are read once per event, the principals once per batch of events."""
        principals = self._principals.get(userid)
        if principals is None:
            groups = self.groups_of(userid) if userid else ()
            principals = self._principals[userid] = set(principals_of(userid, groups))
        granted = acl.settings_principals(
            self.settings, event.kind, "read", top_level=not event.parent
        )
        if granted and not granted.isdisjoint(principals):
            return True
        acls = event.ancestors_acls(self.store)
        if acls is None:
            return False  # an ancestor was deleted since: nothing of it is readable
        acls = dict(acls)
        if event.action != "delete":
            acls[event.kind] = event.acl
        elif not event.parent:
            return bool(granted and not granted.isdisjoint(principals))
        else:
            parent_kind = event.parent[-1][0]
            return acl.allowed(principals, parent_kind, "read", acls)
        return acl.allowed(principals, event.kind, "read", acls)

    # -- the lists followed: read at each poll (other processes' writes) --------

    def _followed(self):
        with self._guard:
            subscribers = list(self._subscribers)
        followed = {}
        for subscriber in subscribers:
            scope = subscriber.scope
            for key in scope.lists(self.store):
                followed[key] = True
            # Where its own bucket or collection would be deleted (by another process).
            if scope.collection is not None:
                followed[((("bucket", scope.bucket),), "collection")] = True
            if scope.bucket is not None:
                followed[((), "bucket")] = True
        return list(followed)

    def _start_thread(self):
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kintofs-push-hub", daemon=True)
            self._thread.start()

    def stop(self):
        with self._wakeup:
            self._stopped = True
            self._wakeup.notify()
        with self._guard:
            subscribers, self._subscribers = self._subscribers, []
        for subscriber in subscribers:
            subscriber.close()


def _tombstone(object_id, ts):
    return {"id": object_id, "last_modified": ts, "deleted": True}
