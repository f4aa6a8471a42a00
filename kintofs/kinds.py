"""Every kind of object kintofs keeps, in one table.

A kind says where its objects live (the kind of its parent, the plural that
names its list in URIs and in folders, whether its objects hold lists of
their own), which ids it accepts, which permissions its ACLs hold and which
grants, on itself or on an ancestor, satisfy each permission asked of it.

Storage, permissions, the web layer and the plugins read their facts here;
no other module lists kinds.  A path is a tuple of ``(kind, id)`` pairs from
the root: ``(("bucket", "blog"), ("collection", "articles"))`` is the path
of ``/buckets/blog/collections/articles``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from . import ids

Path = tuple[tuple[str, str], ...]

# permission asked -> {kind holding a grant: the permissions that grant it}
Inheritance = Mapping[str, Mapping[str, frozenset[str]]]


def _grants(**holders: str) -> dict[str, frozenset[str]]:
    """``_grants(bucket="write read")`` -> ``{"bucket": {"write", "read"}}``."""
    return {kind: frozenset(permissions.split()) for kind, permissions in holders.items()}


def _implies(**held: str) -> dict[str, frozenset[str]]:
    """``_implies(write="write read")``; ``record_create`` stands for ``record:create``."""
    return {name.replace("_", ":"): frozenset(given.split()) for name, given in held.items()}


@dataclass(frozen=True)
class Kind:
    name: str
    plural: str
    parent: str | None
    container: bool = False
    id_pattern: re.Pattern[str] = ids.OBJECT_ID
    # The permissions an ACL of this kind may hold (what a PUT may set).
    permissions: tuple[str, ...] = ("read", "write")
    # Kinto's inheritance tree for this kind; "list" is reading the plural
    # endpoint of its objects, "<child>:create" creating a child in it.
    inheritance: Inheritance = field(default_factory=dict)
    # Fields whose value is a JSON Schema (bucket and collection).
    schema_fields: tuple[str, ...] = ()
    # Validated against a schema (collection, bucket-level), minus these fields;
    # None: never validated.
    schema_ignored: tuple[str, ...] | None = None
    # Changes of this kind are written to its bucket's history (history plugin).
    in_history: bool = False
    # permission held on an object -> the permissions it gives on that same
    # object (Kinto's tree read downwards, "read:attributes" included).
    implies: Mapping[str, frozenset[str]] = field(
        default_factory=lambda: _implies(write="write read", read="read")
    )

    def valid_id(self, value: object) -> bool:
        return ids.is_valid_id(value, self.id_pattern)

    @property
    def create_holder(self) -> str:
        """The kind whose ACL holds ``<name>:create`` ("root" for top-level kinds)."""
        return self.parent or "root"


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(
            "bucket",
            "buckets",
            None,
            container=True,
            permissions=("read", "write", "collection:create", "group:create"),
            inheritance={
                "read": _grants(bucket="write read collection:create group:create"),
                "write": _grants(bucket="write"),
                "collection:create": _grants(bucket="write collection:create"),
                "group:create": _grants(bucket="write group:create"),
                "list": _grants(bucket="write read"),
                "history:create": {},  # nobody creates history entries through the API
            },
            schema_fields=("collection:schema", "group:schema", "record:schema"),
            in_history=True,
            implies=_implies(
                write="write read read:attributes collection:create group:create",
                read="read read:attributes",
                collection_create="collection:create read:attributes",
                group_create="group:create read:attributes",
            ),
        ),
        Kind(
            "group",
            "groups",
            "bucket",
            inheritance={
                "read": _grants(bucket="write read", group="write read"),
                "write": _grants(bucket="write", group="write"),
            },
            schema_ignored=("last_modified",),
            in_history=True,
        ),
        Kind(
            "collection",
            "collections",
            "bucket",
            container=True,
            permissions=("read", "write", "record:create"),
            inheritance={
                "read": _grants(bucket="write read", collection="write read record:create"),
                "write": _grants(bucket="write", collection="write"),
                "record:create": _grants(bucket="write", collection="write record:create"),
                "list": _grants(bucket="write read", collection="write read"),
            },
            schema_fields=("schema",),
            schema_ignored=("last_modified",),
            in_history=True,
            implies=_implies(
                write="write read read:attributes record:create",
                read="read read:attributes",
                record_create="record:create read:attributes",
            ),
        ),
        Kind(
            "record",
            "records",
            "collection",
            inheritance={
                "read": _grants(bucket="write read", collection="write read", record="write read"),
                "write": _grants(bucket="write", collection="write", record="write"),
            },
            schema_ignored=("last_modified", "schema"),
            in_history=True,
        ),
        Kind(
            "account",
            "accounts",
            None,
            id_pattern=ids.ACCOUNT_ID,
            inheritance={
                "read": _grants(account="write read"),
                "write": _grants(account="write"),
            },
        ),
        # A bucket's history entries (history plugin): each carries its own read
        # ACE, computed when it is written.
        Kind(
            "history",
            "history",
            "bucket",
            inheritance={
                "read": _grants(bucket="write read", history="write read"),
                "write": _grants(bucket="write", history="write"),
            },
        ),
    )
}

ROOT_IMPLIES = _implies(bucket_create="bucket:create", account_create="account:create")

_BY_PLURAL = {kind.plural: kind for kind in KINDS.values()}


def of_plural(plural: str) -> Kind | None:
    """The kind whose lists are named ``plural`` (``"records"``), or None."""
    return _BY_PLURAL.get(plural)


def uri(path: Iterable[tuple[str, str]]) -> str:
    """``(("bucket", "b"), ("group", "g"))`` -> ``/buckets/b/groups/g``."""
    return "".join(f"/{KINDS[kind].plural}/{object_id}" for kind, object_id in path)


def parse_uri(text: str) -> Path | None:
    """The path of an object URI, or None if no chain of kinds has this shape.

    Only the shape is checked (each kind inside its parent's), not the ids.
    """
    parts = text.split("/")
    if parts[0] != "" or len(parts) < 3 or len(parts) % 2 == 0:
        return None
    path = []
    parent = None
    for plural, object_id in zip(parts[1::2], parts[2::2], strict=True):
        kind = of_plural(plural)
        if kind is None or kind.parent != parent:
            return None
        path.append((kind.name, object_id))
        parent = kind.name
    return tuple(path)


def ancestors(name: str) -> tuple[str, ...]:
    """The kinds above ``name``, from the root down: record -> (bucket, collection)."""
    found: list[str] = []
    parent = KINDS[name].parent
    while parent is not None:
        found.insert(0, parent)
        parent = KINDS[parent].parent
    return tuple(found)


def implied(name: str, permission: str) -> frozenset[str]:
    """What ``permission`` held on an object gives on that same object (never
    on children), for ``GET /v1/permissions``; "root" is the server itself."""
    implies = ROOT_IMPLIES if name == "root" else KINDS[name].implies
    return implies.get(permission, frozenset({permission}))
