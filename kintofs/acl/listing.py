"""What a caller may do, object by object: the data of ``GET /v1/permissions``.

Kinto lists every object whose own ACL names one of the caller's principals,
with the permissions granted there plus those they imply on the same object
(never on children), then adds what ``<kind>_<perm>_principals`` settings
grant: on every bucket, collection and group, and on the root (``/``) for
``bucket:create`` and ``account:create``.
"""
from .principals import group_uri

# permission held on an object -> permissions it gives on that same object
# (Kinto's inheritance tree read downwards, "read:attributes" included).
IMPLIED = {
    "bucket": {
        "write": {"write", "read", "read:attributes", "collection:create", "group:create"},
        "read": {"read", "read:attributes"},
        "collection:create": {"collection:create", "read:attributes"},
        "group:create": {"group:create", "read:attributes"},
    },
    "group": {"write": {"write", "read"}, "read": {"read"}},
    "collection": {
        "write": {"write", "read", "read:attributes", "record:create"},
        "read": {"read", "read:attributes"},
        "record:create": {"record:create", "read:attributes"},
    },
    "record": {"write": {"write", "read"}, "read": {"read"}},
    "account": {"write": {"write", "read"}, "read": {"read"}},
    "root": {"bucket:create": {"bucket:create"}, "account:create": {"account:create"}},
}

# ``<kind>_create_principals`` is "<kind>:create" on the parent's kind.
CREATE_HOLDERS = {"bucket": "root", "account": "root", "collection": "bucket",
                  "group": "bucket", "record": "collection"}


def settings_grants(settings, principals, kinds):
    """``{kind holding the grant: {permission}}`` from the settings, for ``principals``."""
    principals = set(principals)
    found = {}
    for kind in kinds:
        for permission in ("read", "write", "create"):
            if not principals & set(settings.get(f"{kind}_{permission}_principals") or ()):
                continue
            if permission == "create":
                found.setdefault(CREATE_HOLDERS[kind], set()).add(f"{kind}:create")
            else:
                found.setdefault(kind, set()).add(permission)
    return found


def permission_entries(store, principals, settings, *, with_accounts=False):
    """One entry per object on which ``principals`` hold a permission."""
    kinds = ["bucket", "group", "collection", "record"] + (["account"] if with_accounts else [])
    from_settings = settings_grants(settings, principals, kinds)
    granted = {}  # uri -> (kind, ids, set of permissions)

    def grant(kind, ids, permissions):
        if permissions:
            uri = _uri(kind, ids)
            granted.setdefault(uri, (kind, ids, set()))[2].update(permissions)

    for kind, ids, stored_acl in _walk(store, with_accounts):
        grant(kind, ids, _own_permissions(stored_acl, principals))
        if kind in ("bucket", "group", "collection"):
            grant(kind, ids, from_settings.get(kind, set()))
    if from_settings.get("root"):
        granted["/"] = ("root", (), set(from_settings["root"]))
    return [_entry(uri, kind, ids, permissions)
            for uri, (kind, ids, permissions) in granted.items()]


def _own_permissions(stored_acl, principals):
    principals = set(principals)
    return {name for name, members in stored_acl.items() if principals & set(members)}


def _walk(store, with_accounts):
    """``(kind, ids, acl)`` for every object of the store."""
    for bucket_id, bucket in store.list((), "bucket").objects().items():
        yield "bucket", (bucket_id,), bucket.acl
        in_bucket = (("bucket", bucket_id),)
        for group_id, group in store.list(in_bucket, "group").objects().items():
            yield "group", (bucket_id, group_id), group.acl
        for collection_id, collection in store.list(in_bucket, "collection").objects().items():
            yield "collection", (bucket_id, collection_id), collection.acl
            in_collection = in_bucket + (("collection", collection_id),)
            for record_id, record in store.list(in_collection, "record").objects().items():
                yield "record", (bucket_id, collection_id, record_id), record.acl
    if with_accounts:
        for account_id, account in store.list((), "account").objects().items():
            yield "account", (account_id,), account.acl


def _uri(kind, ids):
    if kind == "bucket":
        return f"/buckets/{ids[0]}"
    if kind == "group":
        return group_uri(*ids)
    if kind == "collection":
        return f"/buckets/{ids[0]}/collections/{ids[1]}"
    if kind == "record":
        return f"/buckets/{ids[0]}/collections/{ids[1]}/records/{ids[2]}"
    return f"/accounts/{ids[0]}"


# Names of the ids in an entry, in Kinto's order (its route's matchdict).
ID_NAMES = {"bucket": ("id",), "group": ("bucket_id", "id"), "collection": ("bucket_id", "id"),
            "record": ("bucket_id", "collection_id", "id"), "account": ("id",), "root": ()}


def _entry(uri, kind, ids, permissions):
    implied = set()
    for permission in permissions:
        implied |= IMPLIED[kind].get(permission, {permission})
    entry = {"uri": uri, "resource_name": kind, "permissions": sorted(implied)}
    entry.update(zip(ID_NAMES[kind], ids))
    if ids:
        entry[f"{kind}_id"] = ids[-1]
    return entry
