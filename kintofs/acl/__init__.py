"""Permissions: who may do what, from ACL sidecars and settings.

Knows nothing of HTTP, and of files only through the ACL documents the store
keeps beside each object (``{"read": [...], "write": [...], ...}``).
"""

from .membership import MembershipIndex
from .principals import AUTHENTICATED, EVERYONE, group_uri, principals_of
from .rules import (
    PERMISSIONS,
    allowed,
    creator_acl,
    grants_by_own_acl,
    merge_acl,
    normalize_acl,
    replace_acl,
    settings_principals,
    shows_acl,
    visible_acl,
)

__all__ = [
    "AUTHENTICATED",
    "EVERYONE",
    "MembershipIndex",
    "PERMISSIONS",
    "allowed",
    "creator_acl",
    "grants_by_own_acl",
    "group_uri",
    "merge_acl",
    "normalize_acl",
    "principals_of",
    "replace_acl",
    "settings_principals",
    "shows_acl",
    "visible_acl",
]
