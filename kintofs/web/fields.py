"""Validation of the fields Kinto gives a meaning to (protocol 2.1 and 15)."""

from ..kinds import KINDS
from .errors import invalid_param


def check_typed_fields(kind, data, with_defaults=True):
    """400 errno 107 if a typed field of ``kind`` has the wrong shape; with
    ``with_defaults``, a group gets ``members: []`` (Kinto's schema default,
    applied only to a body's ``data``: a PUT or POST without one adds none)."""
    for field in KINDS[kind].schema_fields if kind in KINDS else ():
        if field in data:
            check_schema(f"data.{field}", data[field])
    if kind == "collection" and "cache_expires" in data:
        value = data["cache_expires"]
        if not isinstance(value, int) or isinstance(value, bool):
            raise invalid_param("body", "data.cache_expires", f'"{value}" is not a number')
    if kind == "group" and with_defaults:
        data.setdefault("members", [])
    if kind == "group" and "members" in data:
        check_members(data["members"])


def check_schema(name, schema):
    """Kinto's checks of a schema field: a mapping, valid against Draft 7."""
    if not isinstance(schema, dict):
        # Kinto's words (colander's), with Python's spelling of the value.
        raise invalid_param(
            "body",
            name,
            f'"{schema}" is not a mapping type: Does not implement dict-like functionality.',
        )
    from jsonschema import Draft7Validator, SchemaError  # on first use: see schema.dialects

    try:
        Draft7Validator.check_schema(schema)
    except SchemaError as error:
        # Kinto prefixes the message with the last element of the path only.
        where = str(error.path[-1]) if error.path else ""
        raise invalid_param("body", name, f"{where}{error.message}") from None


def check_members(members):
    if not isinstance(members, list):
        raise invalid_param("body", "data.members", f'"{members}" is not iterable')
    for index, member in enumerate(members):
        if not isinstance(member, str):
            raise invalid_param("body", f"data.members.{index}", f"{member!r} is not a string")
        if member == "system.Everyone" or member.startswith("/buckets/"):
            raise invalid_param(
                "body", f"data.members.{index}", f"'{member}' is not a valid user ID."
            )
