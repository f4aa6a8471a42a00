"""``application/json-patch+json`` PATCH bodies (RFC 6902, protocol 6.6 c).

The document patched is ``{"data": ..., "permissions": {perm: {principal: principal}}}``
(Kinto's): each permission is a set keyed by principal, and an operation on
``/permissions/read/<principal>`` (or ``write``) always has the principal as
its value, so ``add`` and ``remove`` need none and a ``move`` or ``copy`` of
one to ``/data/...`` stores the principal.
"""

import copy
import json

from .. import acl
from . import errors

OPERATIONS = ("test", "add", "remove", "replace", "move", "copy")


class PatchFailed(Exception):
    pass


def apply_json_patch(operations, existing, permission_names, principals):
    """(data, acl) after applying ``operations`` to ``existing``."""
    if not isinstance(operations, list):
        raise errors.invalid_param("body", None, "JSON Patch body should be a list of operations")
    check_operations(operations)
    own = acl.visible_acl(existing.acl, principals) or {}
    document = {
        "data": copy.deepcopy(existing.data),
        "permissions": {
            name: {p: p for p in own.get(name, [])} for name in set(own) | {"read", "write"}
        },
    }
    try:
        for operation in operations:
            document = apply_operation(document, operation)
    except PatchFailed as error:
        raise errors.invalid_param("body", None, f"JSON Patch operation failed: {error}") from None
    data = document.get("data")
    if not isinstance(data, dict):
        raise errors.invalid_param(
            "body", None, "JSON Patch operation failed: data is not an object"
        )
    permissions = document.get("permissions") or {}
    new_acl = dict(existing.acl)
    for name, members in permissions.items():
        if name not in permission_names:
            raise errors.invalid_param(
                "body", "permissions", f'"{name}" is not one of {", ".join(permission_names)}'
            )
        new_acl[name] = list(members) if isinstance(members, (dict, list)) else []
    return data, acl.normalize_acl(new_acl)


def check_operations(operations):
    for index, operation in enumerate(operations):
        if not isinstance(operation, dict):
            raise errors.invalid_param(
                "body", str(index), f"{json.dumps(operation)} is not an object"
            )
        op = operation.get("op")
        if op not in OPERATIONS:
            raise errors.invalid_param(
                "body", f"{index}.op", f'"{op}" is not one of {", ".join(OPERATIONS)}'
            )
        path = operation.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise errors.invalid_param("body", f"{index}.path", f'"{path}" is not a valid path')


def split_pointer(pointer):
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchFailed(f"invalid pointer {pointer!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/")]


def _is_permission_member(parts):
    # Kinto fills the value in for read and write only: any other ACE needs one.
    return len(parts) == 3 and parts[0] == "permissions" and parts[1] in ("read", "write")


def apply_operation(document, operation):
    op, parts = operation["op"], split_pointer(operation["path"])
    if _is_permission_member(parts):
        # Kinto overrides any value given, with the path's last segment as sent.
        operation = {**operation, "value": operation["path"].split("/")[-1]}
    if op == "test":
        if _get(document, parts) != operation.get("value"):
            raise PatchFailed(f"test failed at {operation['path']}")
        return document
    if op == "remove":
        _remove(document, parts)
        return document
    if op in ("add", "replace"):
        if "value" not in operation:
            raise PatchFailed("The operation does not contain a 'value' member")
        if op == "replace":
            _get(document, parts)
        return _add(document, parts, copy.deepcopy(operation["value"]))
    source = split_pointer(operation.get("from", ""))
    value = copy.deepcopy(_source(document, source))
    if op == "move":
        _remove(document, source)
    return _add(document, parts, value)


def _get(document, parts):
    current = document
    for part in parts:
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            raise PatchFailed(f"no member at /{'/'.join(parts)}")
    return current


def _source(document, parts):
    """The value a ``move`` or ``copy`` takes (the jsonpatch library's words
    for a missing last member, as Kinto answers them)."""
    if not parts:
        return document
    container = _get(document, parts[:-1])
    key = parts[-1]
    if isinstance(container, dict) and key not in container:
        raise PatchFailed(repr(key))
    if isinstance(container, list) and not (key.isdigit() and int(key) < len(container)):
        raise PatchFailed("list index out of range")
    return _get(document, parts)


def _add(document, parts, value):
    if not parts:
        return value
    container = _get(document, parts[:-1])
    key = parts[-1]
    if isinstance(container, dict):
        container[key] = value
    elif isinstance(container, list):
        if key == "-":
            container.append(value)
        elif key.isdigit() and int(key) <= len(container):
            container.insert(int(key), value)
        else:
            raise PatchFailed(f"bad array index {key!r}")
    else:
        raise PatchFailed(f"cannot add below a {type(container).__name__}")
    return document


def _remove(document, parts):
    if not parts:
        raise PatchFailed("cannot remove the whole document")
    container = _get(document, parts[:-1])
    key = parts[-1]
    if isinstance(container, dict) and key in container:
        del container[key]
    elif isinstance(container, list) and key.isdigit() and int(key) < len(container):
        del container[int(key)]
    else:  # the words of the jsonpatch library, which Kinto uses
        raise PatchFailed(f"can't remove a non-existent object '{key}'")
