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


def wildcard_matcher(pattern):
    """id -> whether it matches ``pattern``, where each ``*`` stands for one or
    more characters (how Kinto looks up the objects shared with a user when a
    path holds ``*``).

    Linear time, whatever the pattern (it comes from a URL): the pieces between
    the stars are looked for in order with str.find, each at least one
    character after the previous one ends; taking each piece's first place is
    never worse for the pieces after it.
    """
    first, *middle, last = pattern.split("*")

    def match(object_id):
        end = len(object_id) - len(last)
        if not object_id.startswith(first) or not object_id.endswith(last):
            return False
        position = len(first)
        for piece in middle:
            found = object_id.find(piece, position + 1, end)
            if found < 0:
                return False
            position = found + len(piece)
        return end - position >= 1

    return match
