"""What a caller may do, object by object: the data of ``GET /v1/permissions``.

Kinto lists every object whose own ACL names one of the caller's principals,
with the permissions granted there plus those they imply on the same object
(never on children), then adds what ``<kind>_<perm>_principals`` settings
grant: on every bucket, collection and group, and on the root (``/``) for
``bucket:create`` and ``account:create``.
"""

from .. import kinds


def settings_grants(settings, principals, names):
    """``{kind holding the grant: {permission}}`` from the settings, for ``principals``."""
    principals = set(principals)
    found: dict[str, set[str]] = {}
    for kind in names:
        for permission in ("read", "write", "create"):
            if not principals & set(settings.get(f"{kind}_{permission}_principals") or ()):
                continue
            if permission == "create":
                found.setdefault(kinds.KINDS[kind].create_holder, set()).add(f"{kind}:create")
            else:
                found.setdefault(kind, set()).add(permission)
    return found


def permission_entries(store, principals, settings, *, with_accounts=False):
    """One entry per object on which ``principals`` hold a permission."""
    names = ["bucket", "group", "collection", "record"] + (["account"] if with_accounts else [])
    from_settings = settings_grants(settings, principals, names)
    granted: dict[str, tuple] = {}  # uri -> (kind, ids, set of permissions)

    def grant(kind, ids, permissions):
        if permissions:
            uri = kinds.uri(zip((*kinds.ancestors(kind), kind), ids, strict=True))
            granted.setdefault(uri, (kind, ids, set()))[2].update(permissions)

    for kind, ids, stored_acl in _walk(store, with_accounts):
        grant(kind, ids, _own_permissions(stored_acl, principals))
        if kind in ("bucket", "group", "collection"):
            grant(kind, ids, from_settings.get(kind, set()))
    if from_settings.get("root"):
        granted["/"] = ("root", (), set(from_settings["root"]))
    return [
        _entry(uri, kind, ids, permissions) for uri, (kind, ids, permissions) in granted.items()
    ]


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


def _entry(uri, kind, ids, permissions):
    implied: set[str] = set()
    for permission in permissions:
        implied |= kinds.implied(kind, permission)
    entry = {"uri": uri, "resource_name": kind, "permissions": sorted(implied)}
    if ids:
        # The ids in Kinto's order (its route's matchdict): the ancestors', then its own.
        id_names = [f"{ancestor}_id" for ancestor in kinds.ancestors(kind)] + ["id"]
        entry.update(zip(id_names, ids, strict=True))
        entry[f"{kind}_id"] = ids[-1]
    return entry
