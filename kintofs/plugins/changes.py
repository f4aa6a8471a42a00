"""The monitor endpoint: every collection's records timestamp in one list.

``GET /v1/buckets/monitor/collections/changes/records`` is Kinto's
kinto-changes plugin (now the ``changes`` plugin of remote-settings): one
entry per collection, so that a client polls many collections with one
request (``_since=<last ETag>``) and then fetches only those whose entry
moved.  An entry is

    {"id": <UUID of MD5(http_host + "/buckets/<bid>/collections/<cid>")>,
     "last_modified": <the collection's records timestamp>,
     "bucket": <bid>, "collection": <cid>, "host": <http_host>}

with Kinto's id formula, so that clients that remember entries by id keep
them.  The list is virtual: nothing is stored, no bucket ``monitor`` needs
to exist, and entries have no tombstones (a deleted collection's entry is
simply gone).  It is served by the generic list view (``_since``,
``_before``, ``_sort``, filters, ``_fields``, ``_limit`` and ``Next-Page``,
``ETag``/``If-None-Match``), over the strict fields of an entry; ``GET`` and
``HEAD`` only, every other method is Kinto's 405.  As in Kinto, ``HEAD``
carries no ``Total-Records``: the endpoint has no count.

Unlike Kinto, whose endpoint is public, a caller sees the entry of a
collection only if it may read every record of it (read or write on its
bucket or on itself, or ``record_read_principals``), which is what makes it
safe to list every collection; the list timestamp (``ETag``) is the newest
timestamp among the caller's entries (now, when it sees none, as Kinto
answers for an empty list).  ``changes_resources`` narrows the list to some
buckets and collections, as Kinto's ``changes.resources``; empty (the
default) means every collection, where Kinto would list none.
"""

import hashlib
import time
import uuid
from functools import cached_property

from .. import __version__, kinds
from ..fsstore import Stored
from ..web.authorizer import Authorizer
from ..web.resource import Kind, ResourceView

PATH = "/v1/buckets/monitor/collections/changes/records"

CAPABILITY = {
    "description": "Track modifications of records in Kinto and store the collection "
    "timestamps into a specific bucket and collection.",
    "url": "http://kinto.readthedocs.io/en/latest/tutorials/synchronisation.html"
    "#polling-for-remote-changes",
    "version": __version__,
}

# The entries' own fields: filtering, sorting or projecting anything else
# (besides id and last_modified) is a 400, as on Kinto's strict resource.
ENTRY_FIELDS = ("host", "bucket", "collection")

MONITOR = Kind(
    "changes",
    plural_methods=("GET", "HEAD"),
    object_methods=(),
    query_fields=ENTRY_FIELDS,
    count_headers=False,
)


def setup(service):
    resources = service.settings["changes_resources"]
    monitored = Monitored(resources)
    service.add_capability("changes", {**CAPABILITY, "collections": list(resources)})

    def monitor(state):
        return MonitorView(state, Entries(state, monitored)).plural(state.method)

    service.add_route(PATH, "ANY", monitor, preflight="GET,HEAD,OPTIONS")


def entry_id(host, bucket_id, collection_id):
    """Kinto's id of an entry: the MD5 of the host and the collection URI, as a UUID."""
    collection_uri = kinds.uri((("bucket", bucket_id), ("collection", collection_id)))
    digest = hashlib.md5((host + collection_uri).encode("utf-8"), usedforsecurity=False)
    return str(uuid.UUID(digest.hexdigest()))


class Monitored:
    """Which collections have an entry: those of ``changes_resources`` (bucket
    URIs stand for all their collections), or all when it is empty."""

    def __init__(self, resources):
        self.buckets = set()
        self.collections = set()
        for uri in resources:
            path = kinds.parse_uri(uri)
            shape = tuple(kind for kind, _ in path) if path else ()
            if shape not in (("bucket",), ("bucket", "collection")) or not all(
                kinds.KINDS[kind].valid_id(object_id) for kind, object_id in path
            ):
                raise ValueError(
                    f"changes_resources: {uri!r} is not the URI of a bucket or a "
                    "collection (e.g. /buckets/b or /buckets/b/collections/c)"
                )
            if len(path) == 1:
                self.buckets.add(path[0][1])
            else:
                self.collections.add((path[0][1], path[1][1]))
        self.everything = not resources

    def collections_in(self, store):
        """``(bucket id, collection id)`` of every existing monitored collection."""
        for bucket_id in sorted(store.list((), "bucket").objects()):
            whole = self.everything or bucket_id in self.buckets
            named = {cid for bid, cid in self.collections if bid == bucket_id}
            if not (whole or named):
                continue
            in_bucket = (("bucket", bucket_id),)
            for collection_id in sorted(store.list(in_bucket, "collection").objects()):
                if whole or collection_id in named:
                    yield bucket_id, collection_id


def may_read_records(state, bucket_id, collection_id):
    """Would ``GET .../records`` show this caller every record of the collection?"""
    path = (("bucket", bucket_id), ("collection", collection_id))
    return Authorizer(state, "record", path).list_allowed("read")


class Entries:
    """The monitor's list as the list view reads a stored one (``objects()``,
    ``timestamp()``, ``newest_first()``...): the entries of the collections
    this caller may read, worked out once, when the view first asks."""

    def __init__(self, state, monitored):
        self.state, self.monitored = state, monitored

    @cached_property
    def by_id(self):
        state, host = self.state, self.state.settings["http_host"]
        found = {}
        for bucket_id, collection_id in self.monitored.collections_in(state.store):
            if not may_read_records(state, bucket_id, collection_id):
                continue
            records = state.store.list(
                (("bucket", bucket_id), ("collection", collection_id)), "record"
            )
            entry = {
                "id": entry_id(host, bucket_id, collection_id),
                "last_modified": records.timestamp(),
                "bucket": bucket_id,
                "collection": collection_id,
                "host": host,
            }
            found[entry["id"]] = Stored(entry, {})
        return found

    @cached_property
    def newest(self):
        """Every entry, in the list view's natural order: -last_modified, then -id."""
        return sorted(
            self.by_id.values(),
            key=lambda stored: (stored.data["last_modified"], stored.data["id"]),
            reverse=True,
        )

    @cached_property
    def list_timestamp(self):
        if not self.by_id:
            return int(time.time() * 1000)  # Kinto's answer for no entries: now
        return max(stored.data["last_modified"] for stored in self.by_id.values())

    # -- what ResourceView.list_objects reads of a list ------------------------

    def get(self, object_id):
        return self.by_id.get(object_id)

    def objects(self):
        return dict(self.by_id)

    def live(self):
        return list(self.by_id.values())

    def tombstones(self):
        return {}

    def timestamp(self):
        return self.list_timestamp

    def derived(self, key, build, use):
        return None  # made for one request: no index is worth keeping

    def newest_first(self, since=None, until=None):
        for stored in self.newest:
            ts = stored.data["last_modified"]
            if until is not None and ts > until:
                continue
            if since is not None and ts <= since:
                break
            yield stored.data["id"], stored, ts


class EntriesAuthorizer(Authorizer):
    """Entries are filtered by permission as they are made: the list shows all of them."""

    def visible_ids(self, permission, objects):
        return None


class MonitorView(ResourceView):
    """The generic list view over :class:`Entries` instead of a stored list."""

    def __init__(self, state, entries):
        super().__init__(state, MONITOR, ())
        self.authorizer = EntriesAuthorizer(state, MONITOR.name, ())
        self.entries = entries

    def object_list(self):
        return self.entries
