"""The three PATCH flavours Kinto accepts (protocol 6.6)."""

import copy


def shallow_merge(data, changes):
    """``application/json``: top-level fields replace, nulls are stored."""
    return {**data, **changes}


def merge_patch(target, patch):
    """RFC 7396: merge objects recursively, a null removes the key."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result
