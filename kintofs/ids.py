"""Kinto's id rules, checked before an id ever becomes part of a path.

Every id that reaches the storage layer has passed one of these patterns, and
the patterns only admit ASCII letters, digits and ``_-`` (plus ``+.@`` for
accounts) with a letter or digit first.  So no id can be ``..``, contain a
slash, a backslash or NUL, or start with the ``_`` and ``.`` that mark our
reserved file names.
"""

import re
import secrets
import string
import uuid

OBJECT_ID = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_-]*")
ACCOUNT_ID = re.compile(r"[a-zA-Z0-9][+.@a-zA-Z0-9_-]*")

# Kinto sets no length limit, but an id becomes a file name ("<id>.json",
# "<id>.acl") and most file systems stop at 255 bytes.
MAX_ID_LENGTH = 200

_FIRST = string.ascii_letters + string.digits
_REST = _FIRST + "_-"


def is_valid_id(value, pattern=OBJECT_ID):
    """True if ``value`` is a string that matches ``pattern`` from end to end."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_ID_LENGTH
        and pattern.fullmatch(value) is not None
    )


def generate_name():
    """An 8-character id like Kinto's name generator (buckets, groups, collections)."""
    return secrets.choice(_FIRST) + "".join(secrets.choice(_REST) for _ in range(7))


def generate_uuid():
    """A lowercase dashed UUID4, Kinto's record id generator."""
    return str(uuid.uuid4())
