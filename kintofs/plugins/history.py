"""History plugin: every change of a bucket's objects, as a list (protocol 17).

Each create/update/delete of a bucket, group, collection or record appends
one entry to the history list of its bucket, ``<data>/buckets/<bid>/history/``:
an ordinary fsstore list of ``<uuid>.json`` entries (with their ``.acl``
read grant) and a journal, so entries are plain JSON files and the list gets
timestamps, tombstones, locking and crash repair like every other list (see
docs/storage.md).  ``GET/HEAD/DELETE /buckets/<bid>/history`` is the generic
list view over it, in strict-field mode.  Deleting a bucket deletes its folder,
history included.
"""

import uuid
from dataclasses import replace
from datetime import UTC, datetime

from .. import acl, ids, kinds, query
from ..feed import IN_COMMIT
from ..fsstore import ParentNotFound
from ..web import errors
from ..web import request as req
from ..web.resource import Kind, ResourceView

# The top-level fields of an entry (with id, last_modified and deleted):
# filtering, sorting or projecting anything else is a 400, as in Kinto.
ENTRY_FIELDS = (
    "user_id",
    "uri",
    "action",
    "date",
    "resource_name",
    "bucket_id",
    "collection_id",
    "group_id",
    "record_id",
    "target",
)

# Kinto compares these with strings even when the querystring value looks
# like a number (record_id=123 finds the record "123").
STRING_ID_FIELDS = ("bucket_id", "collection_id", "record_id")


def setup(service):
    settings = service.settings
    service.add_capability("history", capability(settings))
    recorder = HistoryRecorder(service.store, settings)
    # In the commit: an entry is written with the change it records.
    service.feed.subscribe(recorder.on_change, IN_COMMIT)
    add_routes(service)


def capability(settings):
    """The hello ``history`` capability, with the trimming/exclusion settings in use."""
    found = {
        "description": "Track changes on data.",
        "url": "http://kinto.readthedocs.io/en/latest/api/1.x/history.html",
    }
    if settings["history_auto_trim_max_count"] > 0:
        found["auto_trim_max_count"] = settings["history_auto_trim_max_count"]
    if settings["history_auto_trim_user_ids"]:
        found["auto_trim_user_ids"] = list(settings["history_auto_trim_user_ids"])
    if settings["history_exclude_resources"]:
        found["excluded_resources"] = [
            {kind: object_id for kind, object_id in path_of_uri(uri, strict=True)}
            for uri in settings["history_exclude_resources"]
        ]
    return found


def path_of_uri(uri, strict=False):
    """``/buckets/b/collections/c`` -> ``(("bucket", "b"), ("collection", "c"))``."""
    path = kinds.parse_uri(uri)
    if strict and (path is None or not kinds.KINDS[path[-1][0]].in_history):
        raise ValueError(
            f"history_exclude_resources: {uri!r} is not the URI of a bucket, "
            "group, collection or record (e.g. /buckets/b/collections/c)"
        )
    return path


# -- recording ----------------------------------------------------------------


class HistoryRecorder:
    """The change listener that writes entries (Kinto's history listener)."""

    def __init__(self, store, settings):
        self.store = store
        self.excluded_uris = set(settings["history_exclude_resources"])
        self.excluded_user_ids = set(settings["history_exclude_user_ids"])
        self.trim_max = settings["history_auto_trim_max_count"]
        self.trim_threshold = settings["history_auto_trim_threshold"]
        self.trim_user_ids = set(settings["history_auto_trim_user_ids"])

    def on_change(self, change):
        kind, userid = change.kind, change.userid
        if not kinds.KINDS[kind].in_history or userid in self.excluded_user_ids:
            return
        if kind == "bucket" and change.action == "delete":
            return  # the bucket's history went with it (Kinto purges it, this entry too)
        path = change.path
        if self._excluded(path):
            return
        bucket_id = path[0][1]
        entry = history_entry(
            change.action, kind, change.uri, path, userid, change.data, change.acl
        )
        readers = self._readers(path, change.acl)
        self._append(bucket_id, entry, readers, kind, userid)

    def _excluded(self, path):
        uris = {kinds.uri(path[:depth]) for depth in range(1, len(path) + 1)}
        return bool(uris & self.excluded_uris)

    def _readers(self, path, object_acl):
        """Who may read the entry: readers and writers of the bucket, of the
        collection (if any) and of the object itself, at the time of the change."""
        acls = [object_acl]
        for depth, (kind, object_id) in enumerate(path[:-1]):
            if kind in ("bucket", "collection"):
                stored = self.store.get(path[:depth], kind, object_id)
                acls.append(stored.acl if stored else {})
        return sorted(
            {
                principal
                for found in acls
                for permission in ("read", "write")
                for principal in found.get(permission, ())
            }
        )

    def _append(self, bucket_id, entry, readers, kind, userid):
        history = self.store.list((("bucket", bucket_id),), "history")
        try:
            with history.transaction() as writer:
                writer.put(str(uuid.uuid4()), entry, acl.normalize_acl({"read": readers}))
                if self._trims(userid):
                    self._trim(history, writer, kind, userid)
        except ParentNotFound:
            pass  # the bucket was deleted meanwhile, and its history with it

    def _trims(self, userid):
        return self.trim_max > 0 and (not self.trim_user_ids or userid in self.trim_user_ids)

    def _trim(self, history, writer, kind, userid):
        """Keep the newest ``trim_max`` entries of this kind (and of this user when
        trimming by user), once the excess passes the threshold (Kinto's rule)."""

        def same(entry):
            return entry.get("resource_name") == kind and (
                not self.trim_user_ids or entry.get("user_id") == userid
            )

        entries = [stored.data for stored in history.objects().values() if same(stored.data)]
        if len(entries) <= self.trim_max + self.trim_threshold:
            return
        entries.sort(key=lambda entry: entry["last_modified"], reverse=True)
        for old in entries[self.trim_max :]:
            writer.delete(old["id"])


def history_entry(action, kind, uri, path, userid, data, object_acl):
    """One entry as Kinto writes it (keys in Kinto's order; id and
    last_modified are added by the store)."""
    entry = {
        "date": datetime.now(UTC).isoformat(timespec="microseconds"),
        "target": {"data": data, "permissions": dict(object_acl)},
        "action": action,
        "uri": uri,
        "user_id": userid,
        "resource_name": kind,
    }
    # The bucket is implied by the list, so only bucket entries name it.
    for parent_kind, object_id in path:
        if parent_kind != "bucket" or kind == "bucket":
            entry[f"{parent_kind}_id"] = object_id
    return entry


# -- the HTTP side --------------------------------------------------------------


def ids_as_strings(parsed):
    """Kinto's history compares integer-looking id filters as strings."""
    filters = [
        replace(flt, value=str(flt.value))
        if flt.field in STRING_ID_FIELDS and isinstance(flt.value, int)
        else flt
        for flt in parsed.filters
    ]
    return replace(parsed, filters=filters)


HISTORY = Kind(
    "history",
    generate_id=ids.generate_uuid,
    plural_methods=("HEAD", "GET", "DELETE"),
    object_methods=(),
    query_fields=ENTRY_FIELDS,
    adjust_query=ids_as_strings,
    count_headers=False,
)


def add_routes(service):
    def history(state, bucket):
        return ResourceView(state, HISTORY, (("bucket", bucket),)).plural(state.method)

    def snapshot(state, bucket, spec):
        collection_id, at, timestamp = spec.rpartition("@")
        if not at:
            raise errors.unknown_url()
        if state.method not in ("GET", "HEAD"):
            raise errors.method_not_allowed(["GET", "HEAD", "OPTIONS"])
        req.check_accept(state.environ.get("HTTP_ACCEPT"))
        return errors.json_response(
            200,
            {
                "data": collection_snapshot(
                    state, bucket, collection_id, parse_snapshot_timestamp(timestamp)
                )
            },
        )

    service.add_route(
        "/v1/buckets/<bucket>/history", "ANY", history, preflight="GET,HEAD,DELETE,OPTIONS"
    )
    service.add_route(
        "/v1/buckets/<bucket>/snapshot/collections/<spec>",
        "ANY",
        snapshot,
        preflight="GET,HEAD,OPTIONS",
    )


def parse_snapshot_timestamp(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise errors.invalid_param("path", "timestamp", f"Invalid timestamp {text!r}")
    return value


def collection_snapshot(state, bucket_id, collection_id, timestamp):
    """The collection's records as they were at ``timestamp``, newest first:
    the current records untouched since, and for the others their latest
    history entry at or before ``timestamp`` (Kinto's reconstruction)."""
    for kind, object_id in (("bucket", bucket_id), ("collection", collection_id)):
        if not ids.is_valid_id(object_id):
            raise errors.parent_not_found(kind, object_id)
    store = state.store
    bucket_path = (("bucket", bucket_id),)
    acls = [
        stored.acl
        for stored in (
            store.get((), "bucket", bucket_id),
            store.get(bucket_path, "collection", collection_id),
        )
        if stored is not None
    ]
    if not any(
        set(state.principals) & set(found.get(permission, ()))
        for found in acls
        for permission in ("read", "write")
    ):
        raise state.denied()
    records = store.list((*bucket_path, ("collection", collection_id)), "record")
    live = records.objects()
    result = [stored.data for stored in live.values() if stored.data["last_modified"] <= timestamp]
    changed = {
        object_id for object_id, stored in live.items() if stored.data["last_modified"] > timestamp
    }
    changed |= {object_id for object_id, ts in records.tombstones().items() if ts > timestamp}
    if changed:
        result += _versions_at(
            store.list(bucket_path, "history"), collection_id, changed, timestamp
        )
    return query.sort_objects(result, [("last_modified", -1)])


def _versions_at(history, collection_id, record_ids, timestamp):
    """For each record, the target of its newest entry stamped at or before ``timestamp``."""
    latest = {}
    for stored in history.objects().values():
        entry = stored.data
        target = entry.get("target", {}).get("data", {})
        if (
            entry.get("resource_name") == "record"
            and entry.get("collection_id") == collection_id
            and entry.get("record_id") in record_ids
            and _at_or_before(target.get("last_modified"), timestamp)
        ):
            current = latest.get(entry["record_id"])
            if current is None or entry["last_modified"] > current["last_modified"]:
                latest[entry["record_id"]] = entry
    return [entry["target"]["data"] for entry in latest.values()]


def _at_or_before(value, timestamp):
    return isinstance(value, int) and not isinstance(value, bool) and value <= timestamp
