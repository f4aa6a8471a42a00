"""Kinto's permission rules: names per kind, inheritance, editing ACLs.

An ACL is a dict ``{permission: [principal, ...]}`` stored in a sidecar.
"""

from ..kinds import KINDS

PERMISSIONS = {name: kind.permissions for name, kind in KINDS.items()}

# (kind of the object, permission asked) -> the grants that satisfy it, as
# {kind of the object or of an ancestor: permissions} (see kinds.py).
INHERITANCE = {
    (name, asked): holders
    for name, kind in KINDS.items()
    for asked, holders in kind.inheritance.items()
}


# Kinto's global grants, ``<kind>_<perm>_principals`` settings, where <kind>
# is the kind of the objects requested.  Kinto checks the setting of every
# permission that would satisfy the request through ACLs, so e.g.
# ``record_write_principals`` also lets its principals read, list and create
# records.  Operations: an object's read or write, a creation, a list (also
# plural DELETE uses "write"), and "missing" (PATCH/DELETE of an object that
# does not exist: read on the list, then a 404).
SETTINGS_GRANTS = {
    "read": ("read", "write"),
    "write": ("write",),
    "create": ("create", "write"),
    "list": ("read", "write"),
    "missing": ("read", "write"),
}
# Top-level lists (buckets) have no parent object: only the setting named
# after the operation counts, except for reading one object.
TOP_LEVEL_SETTINGS_GRANTS = {
    **SETTINGS_GRANTS,
    "create": ("create",),
    "list": ("read",),
    "missing": ("write",),
}


def settings_principals(settings, kind, operation, top_level=False):
    """Principals that settings allow ``operation`` on objects of ``kind``."""
    table = TOP_LEVEL_SETTINGS_GRANTS if top_level else SETTINGS_GRANTS
    found: set[str] = set()
    for permission in table[operation]:
        found.update(settings.get(f"{kind}_{permission}_principals") or ())
    return found


def allowed(principals, kind, permission, acls, extra_principals=()):
    """True if ``principals`` hold ``permission`` on an object of ``kind``.

    ``acls`` maps the kinds along the object's path (itself and its
    ancestors) to their ACLs; ``extra_principals`` are granted the permission
    by settings (e.g. ``record_read_principals``).
    """
    principals = set(principals)
    if principals & set(extra_principals):
        return True
    for holder_kind, permissions in INHERITANCE[(kind, permission)].items():
        acl = acls.get(holder_kind) or {}
        if any(principals & set(acl.get(name, ())) for name in permissions):
            return True
    return False


def grants_by_own_acl(principals, kind, permission, acl):
    """True if the object's own ACL (no ancestors) grants ``permission``."""
    own = INHERITANCE[(kind, permission)].get(kind, frozenset())
    principals = set(principals)
    return any(principals & set(acl.get(name, ())) for name in own)


def normalize_acl(acl):
    """Sorted, de-duplicated principals; empty permissions dropped."""
    return {name: sorted(set(members)) for name, members in sorted(acl.items()) if members}


def creator_acl(acl, writer):
    """``acl`` with ``writer`` added to ``write``: editors always own what they edit."""
    result = {name: list(members) for name, members in acl.items()}
    result["write"] = [*result.get("write", []), writer]
    return normalize_acl(result)


def replace_acl(acl, requested):
    """PUT semantics: every permission is replaced (``None`` values dropped).

    An empty request (or one of only ``None``) leaves the ACL unchanged.
    """
    requested = {name: members for name, members in requested.items() if members is not None}
    if not requested:
        return dict(acl)
    return normalize_acl(requested)


def merge_acl(acl, requested):
    """PATCH semantics: permissions named in ``requested`` are replaced."""
    result = dict(acl)
    for name, members in requested.items():
        if members is not None:
            result[name] = members
    return normalize_acl(result)


def shows_acl(acl, principals):
    """True if ``principals`` may see the ACL: one of them is a writer."""
    return not set(acl.get("write", ())).isdisjoint(principals)


def visible_acl(acl, principals):
    """What a caller may see of an ACL: all of it if it is a writer, else nothing."""
    if shows_acl(acl, principals):
        return normalize_acl(acl)
    return {}
