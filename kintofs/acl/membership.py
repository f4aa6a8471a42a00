"""The principal index: which groups list a principal as a member.

Kinto resolves a user's group principals on every authenticated request.
Scanning every bucket's groups each time would cost one list read per
bucket, and the default-bucket plugin gives every user a bucket, so the
index keeps ``principal -> group URIs`` in memory instead.

How it stays correct:

* **Our own writes** reach :meth:`MembershipIndex.object_changed` (a change
  listener): a group written or deleted, or a bucket deleted with its groups.
* **Other processes** (a second daemon on the same data folder): every
  membership change also writes a new token to the store's ``memberships``
  generation (one small file at the root, see fsstore/generation.py).  Each
  lookup reads that token, one small read, and rebuilds the index when it is
  not the one the index was built from.  This is simpler and cheaper than
  checking every groups journal (one stat per bucket per request) and just
  as correct for any process that goes through kintofs.
* **Group files edited by hand** do not touch the token: :meth:`reload`
  (for a file watcher) rebuilds on the next lookup, and :meth:`invalidate`
  makes every process rebuild.

Deleting a bucket removes the memberships of its groups.  Kinto keeps them
(a user stays in a deleted bucket's group, and is in it again if a group of
the same id is re-created); kintofs deliberately does not.
"""

import threading

from .principals import AUTHENTICATED, group_uri

NOT_LOADED = object()


class MembershipIndex:
    def __init__(self, store):
        self.store = store
        self.generation = store.generation("memberships")
        self._guard = threading.Lock()
        self._members = {}  # group URI -> frozenset of member principals
        self._groups_of = {}  # principal -> frozenset of group URIs
        self._built_from = NOT_LOADED
        self._changes = 0  # own changes applied; a rebuild started before one is stale

    # -- lookups ----------------------------------------------------------

    def groups_of(self, userid):
        """Sorted group URIs that list ``userid`` or ``system.Authenticated``.

        Kinto gives every authenticated user the groups that list
        ``system.Authenticated`` as a member, too.
        """
        groups_of = self._current()
        return sorted(
            groups_of.get(userid, frozenset()) | groups_of.get(AUTHENTICATED, frozenset())
        )

    def _current(self):
        token = self.generation.current()
        with self._guard:
            if self._built_from is not NOT_LOADED and self._built_from == token:
                return self._groups_of
            changes_before = self._changes
        # Scan without holding the guard: reading a list may wait for its
        # lock, which a writer holds while it reports a change to us.
        members = self._scan()
        groups_of = _invert(members)
        with self._guard:
            if self._changes == changes_before:  # no own change raced the scan
                self._members, self._groups_of, self._built_from = members, groups_of, token
        return groups_of

    def _scan(self):
        members = {}
        for bucket_id in self.store.list((), "bucket").objects():
            groups = self.store.list((("bucket", bucket_id),), "group").objects()
            for group_id, stored in groups.items():
                members[group_uri(bucket_id, group_id)] = _members_of(stored.data)
        return members

    # -- changes ----------------------------------------------------------

    def object_changed(self, action, kind, uri, data):
        """Our own write of ``kind`` at ``uri``: keep the index (and others) current."""
        if kind == "group":
            members = _members_of(data) if action != "delete" else frozenset()
            self._apply(lambda index: index._set_group(uri, members))
        elif kind == "bucket" and action == "delete":
            self._apply(lambda index: index._drop_bucket(uri))

    def reload(self):
        """Rebuild on the next lookup (this process only), e.g. after a file edit."""
        with self._guard:
            self._built_from = NOT_LOADED
            self._changes += 1

    def invalidate(self):
        """Make every process on this data folder rebuild (e.g. after a flush)."""
        self.generation.bump()
        self.reload()

    def _apply(self, change):
        with self._guard:
            self._changes += 1
            try:
                previous, new = self.generation.bump()
            except Exception:
                # The change is stored; without a new token other processes
                # cannot be told, but this one rebuilds from the files.
                self._built_from = NOT_LOADED
                raise
            if self._built_from is NOT_LOADED or previous != self._built_from:
                # Another process changed memberships since our last build:
                # rebuilding from the files is the only safe way forward.
                self._built_from = NOT_LOADED
                return
            change(self)
            self._groups_of = _invert(self._members)
            self._built_from = new

    def _set_group(self, uri, members):
        self._members = dict(self._members)
        if members:
            self._members[uri] = members
        else:
            self._members.pop(uri, None)

    def _drop_bucket(self, bucket_uri):
        prefix = bucket_uri + "/groups/"
        self._members = {
            uri: members for uri, members in self._members.items() if not uri.startswith(prefix)
        }


def _members_of(data):
    members = (data or {}).get("members")
    if not isinstance(members, list):
        return frozenset()
    return frozenset(member for member in members if isinstance(member, str))


def _invert(members):
    groups_of: dict[str, set[str]] = {}
    for uri, principals in members.items():
        for principal in principals:
            groups_of.setdefault(principal, set()).add(uri)
    return {principal: frozenset(uris) for principal, uris in groups_of.items()}
