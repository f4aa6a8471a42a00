"""JSON-schema validation of written objects (protocol section 15).

Enabled by ``experimental_collection_schema_validation``.  A record is
validated against its collection's ``schema``, then its bucket's
``record:schema``; a collection against the bucket's ``collection:schema``;
a group against the bucket's ``group:schema``.  Errors are Kinto's exact
400 errno 107 bodies.

Compiled validators are cached per (schema owner, its last_modified), so a
stream of record writes compiles the collection schema once.
"""

import functools
import threading
from collections import OrderedDict

from .. import kinds
from . import errors

CAPABILITY = {
    "description": "Validates collection records with JSON schemas.",
    "url": "https://kinto.readthedocs.io/en/latest/api/1.x/collections.html#collection-json-schema",
}

# Which kinds are validated, and the fields never shown to a schema (stamped
# by the server, or the record's own schema version) are in kinds.py: ``id``
# is added unless the schema mentions it.

CACHE_SIZE = 256


@functools.cache
def dialects():
    """``{$schema URI: validator class}`` and the newest class, for a schema.

    What validator_for does, without its DeprecationWarning for an unknown
    $schema (which its docs say will become an error, and so a 500 here).
    Imported on first use: jsonschema is a third of the daemon's start-up
    time and memory, and most daemons never see a schema.
    """
    import jsonschema

    classes = (
        jsonschema.Draft3Validator,
        jsonschema.Draft4Validator,
        jsonschema.Draft6Validator,
        jsonschema.Draft7Validator,
        jsonschema.Draft201909Validator,
        jsonschema.Draft202012Validator,
    )
    by_uri = {
        (cls.META_SCHEMA.get("$id") or cls.META_SCHEMA.get("id", "")).rstrip("#"): cls
        for cls in classes
    }
    return by_uri, jsonschema.Draft202012Validator


def setup(service):
    """Register the validator and the ``schema`` capability when enabled."""
    if not service.settings["experimental_collection_schema_validation"]:
        return
    service.add_capability("schema", dict(CAPABILITY))
    validators = CompiledSchemas()

    def validate(state, kind, parent, data, object_id=None):
        if kind in kinds.KINDS and kinds.KINDS[kind].schema_ignored is not None:
            validate_object(state, validators, kind, parent, data, object_id)

    service.add_validator(validate)


def validate_object(state, validators, kind, parent, data, object_id):
    """Raise Kinto's 400 if ``data`` breaks a schema; stamp records' ``schema``.

    ``object_id`` is None when the server is about to generate the id (a
    POST without one): Kinto validates such an object without ``id``.
    """
    bucket_id = parent[0][1]
    bucket = state.stored(parent[:1])
    if bucket is None:
        raise errors.parent_not_found("bucket", bucket_id)
    candidate = dict(data, id=object_id) if object_id is not None else dict(data)
    ignored = kinds.KINDS[kind].schema_ignored
    if kind == "record":
        collection = state.stored(parent[:2])
        if collection is not None and "schema" in collection.data:
            owner = (kinds.uri(parent), collection.data.get("last_modified"))
            check(validators.get(owner, collection.data["schema"]), candidate, ignored)
            data["schema"] = collection.data.get("last_modified")
    field = f"{kind}:schema"
    if field in bucket.data:
        owner = (kinds.uri(parent[:1]) + f"#{field}", bucket.data.get("last_modified"))
        check(validators.get(owner, bucket.data[field]), candidate, ignored)


def check(compiled, candidate, ignored):
    """Validate ``candidate`` with a :class:`Compiled` schema, or raise the 400."""
    if compiled.error is not None:
        raise compiled.error
    if "id" not in compiled.properties:
        ignored = (*ignored, "id")
    instance = {k: v for k, v in candidate.items() if k not in ignored}
    validator = compiled.without_required(ignored)
    from referencing.exceptions import Unresolvable  # with jsonschema: see dialects()

    try:
        error = next(validator.iter_errors(instance), None)
    except Unresolvable as unresolvable:
        raise errors.invalid_param("body", "schema", str(unresolvable)) from None
    except Exception as failure:  # e.g. a pattern Python's re cannot compile
        raise errors.invalid_param("body", "schema", str(failure)) from None
    if error is not None:
        raise errors.invalid_param("body", error_field(error), error.message)


def error_field(error):
    """Kinto's ``name`` for a failure: the last element of the instance path;
    at the root, the last item of the keyword's value (the last name listed
    in ``required``); else the keyword itself (``additionalProperties``)."""
    if error.path:
        return error.path[-1]
    try:
        if error.validator_value:
            return error.validator_value[-1]
    except (TypeError, KeyError, IndexError):
        pass  # Kinto answers 500 here (e.g. maxProperties); name the keyword instead
    return error.schema_path[-1] if error.schema_path else None


class Compiled:
    """One schema, compiled for its dialect, or the 400 that it deserves."""

    def __init__(self, schema):
        self.error = None
        self.properties = {}
        self._by_ignored = {}
        if not isinstance(schema, dict):
            self.error = errors.invalid_param(
                "body", "schema", f"{schema!r} is not of type 'object'"
            )
            return
        properties = schema.get("properties")
        self.properties = properties if isinstance(properties, dict) else {}
        self.schema = schema
        if not isinstance(schema.get("$schema", ""), str):  # only a hand-edited file
            self.error = errors.invalid_param("body", "schema", "$schema is not a string")
            return
        # The dialect named by $schema, else the newest one (Draft 2020-12), as Kinto.
        from jsonschema import SchemaError

        by_uri, latest = dialects()
        self.cls = by_uri.get(schema.get("$schema", "").rstrip("#"), latest)
        try:
            self.cls.check_schema(schema)
        except SchemaError as error:
            # Valid Draft 7 (checked on write) but not valid in the dialect used
            # for data: Kinto answers 500, we name the schema.
            where = str(error.path[-1]) if error.path else ""
            self.error = errors.invalid_param("body", "schema", f"{where}{error.message}")

    def without_required(self, ignored):
        """A validator whose ``required`` no longer lists the ignored fields.

        Kinto drops them from ``required`` (and ``required`` itself when it
        becomes empty), so a schema may require ``id`` or ``last_modified``.
        """
        validator = self._by_ignored.get(ignored)
        if validator is None:
            schema = self.schema
            required = schema.get("required")
            if isinstance(required, list):
                kept = [name for name in required if name not in ignored]
                schema = {k: v for k, v in schema.items() if k != "required"}
                if kept:
                    schema["required"] = kept
            # No retrieval of remote $ref: the server must not fetch URLs
            # chosen by clients. They answer "Unresolvable: <url>", as Kinto
            # does when its fetch fails.
            from jsonschema_specifications import REGISTRY

            validator = self.cls(schema, registry=REGISTRY)
            self._by_ignored[ignored] = validator
        return validator


class CompiledSchemas:
    """A small thread-safe LRU of :class:`Compiled` keyed by (owner, last_modified)."""

    def __init__(self, size=CACHE_SIZE):
        self.size = size
        self._items = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key, schema):
        with self._lock:
            compiled = self._items.get(key)
            if compiled is not None:
                self._items.move_to_end(key)
                return compiled
        compiled = Compiled(schema)
        with self._lock:
            self._items[key] = compiled
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return compiled
