"""Principals: the names a request acts under."""

from .. import kinds

EVERYONE = "system.Everyone"
AUTHENTICATED = "system.Authenticated"


def group_uri(bucket_id, group_id):
    """A group's principal is its URI."""
    return kinds.uri((("bucket", bucket_id), ("group", group_id)))


def principals_of(userid, groups=()):
    """Everything a caller is: its user id, the system principals, its groups."""
    if userid is None:
        return [EVERYONE]
    return [userid, EVERYONE, AUTHENTICATED, *groups]
