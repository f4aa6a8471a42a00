"""Reading a request: body, content negotiation, preconditions.

Every function raises a Kinto error response (errors.py) on bad input.
"""

import json
import math
import re

from .errors import invalid, invalid_param, too_large

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"

_ETAG = re.compile(r'"(\d+)"')


def check_accept(accept):
    """406 unless the client accepts JSON (missing header, */*, application/*)."""
    if not accept:
        return
    for item in accept.split(","):
        media = item.split(";")[0].strip().lower()
        if media in ("*/*", "application/*", JSON):
            return
    raise invalid_param(
        "header", "Accept", "Accept header should be one of ['application/json']", status=406
    )


def content_type_of(header, allowed):
    """The request's media type if it is one of ``allowed`` (missing means JSON)."""
    if not header:
        return JSON
    media = header.split(";")[0].strip().lower()
    if media in allowed:
        return media
    raise invalid_param(
        "header",
        "Content-Type",
        f"Content-Type header should be one of {list(allowed)}",
        status=415,
    )


def read_body(environ, max_bytes):
    """The raw body, refusing more than ``max_bytes`` before reading it all."""
    length = environ.get("CONTENT_LENGTH") or ""
    if length.strip():
        try:
            size = int(length)
        except ValueError:
            raise invalid_param("header", "Content-Length", "Invalid Content-Length") from None
        if size > max_bytes:
            raise too_large(max_bytes)
        return _read_stream(environ["wsgi.input"], size, max_bytes) if size > 0 else b""
    stream = environ.get("wsgi.input")
    if stream is None or "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return b""
    if hasattr(stream, "maxlen"):
        # cheroot reads a whole chunk at once: without a cap, one chunk header
        # claiming a terabyte exhausts memory.  Framing counts too, hence the room.
        stream.maxlen = 2 * max_bytes + 1024
    body = _read_stream(stream, max_bytes + 1, max_bytes)
    if len(body) > max_bytes:
        raise too_large(max_bytes)
    return body


def _read_stream(stream, size, max_bytes):
    """Up to ``size`` bytes of the body, bad framing and stalls as Kinto errors."""
    try:
        return stream.read(size)
    except TimeoutError:
        raise invalid_param("body", None, "The request body was not sent in time") from None
    except ValueError:  # a malformed chunk header or trailer
        raise invalid_param("header", "Transfer-Encoding", "Invalid chunked body") from None
    except Exception:  # the server's own cap on a chunk (cheroot's MaxSizeExceeded, IOError)
        raise too_large(max_bytes) from None


def parse_json(raw, max_depth):
    """The decoded JSON body (``{}`` when empty), as Kinto reports errors."""
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
        if _SURROGATE_ESCAPE.search(text):
            _check_encodable(value)
    except (UnicodeError, ValueError) as error:
        raise invalid(
            [
                {"location": "body", "name": "", "description": f"Invalid JSON: {error}"},
                {"location": "body", "name": "", "description": "Required"},
            ]
        ) from None
    except RecursionError:
        raise invalid_param("body", None, "Invalid JSON: nested too deeply") from None
    if depth_of(value) > max_depth:
        raise invalid_param("body", None, f"JSON nested deeper than {max_depth} levels")
    if not isinstance(value, (dict, list)):
        raise invalid(
            [
                {
                    "location": "body",
                    "name": "",
                    "description": "Should be a JSON object or an array",
                },
                {"location": "body", "name": "", "description": "Required"},
            ]
        )
    return value


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")  # Python accepts NaN and Infinity, JSON does not


def _finite_float(text):
    number = float(text)
    if math.isinf(number):
        raise ValueError("Number too big to be stored in double")
    return number


# A lone surrogate can only come from a \uD800-\uDFFF escape (UTF-8 cannot
# hold one): without such an escape the body need not be encoded again.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _check_encodable(value):
    """Refuse lone surrogates ("\\ud800"): Python decodes them, UTF-8 cannot store them."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("The surrogate pair in string is invalid") from None


def depth_of(value):
    """How deeply objects and arrays nest (``{"a": 1}`` is 1), without
    recursion: bodies are untrusted."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def not_a_mapping(name, value):
    label = f"{name} in body: " if name else ""
    return invalid_param(
        "body",
        name or "",
        f'{label}"{json.dumps(value)}" is not a mapping type: '
        "Does not implement dict-like functionality.",
    )


def envelope(body, permission_names):
    """``(data, permissions)`` from ``{"data": ..., "permissions": ...}``; None if absent."""
    if not isinstance(body, dict):
        raise not_a_mapping("", body)
    unknown = {key: value for key, value in body.items() if key not in ("data", "permissions")}
    if unknown:
        raise invalid_param("body", "", f'Unrecognized keys in mapping: "{unknown!r}"')
    data = body.get("data")
    if "data" in body and not isinstance(data, dict):
        raise invalid_param(
            "body",
            "data",
            f'"{data}" is not a mapping type: Does not implement dict-like functionality.',
        )
    permissions = body.get("permissions")
    if "permissions" in body:
        permissions = check_permissions(permissions, permission_names)
    return data, permissions


def check_permissions(permissions, permission_names):
    if not isinstance(permissions, dict):
        raise invalid_param(
            "body",
            "permissions",
            f'"{permissions}" is not a mapping type: Does not implement dict-like functionality.',
        )
    for name, members in permissions.items():
        if name not in permission_names:
            raise invalid_param(
                "body", "permissions", f'"{name}" is not one of {", ".join(permission_names)}'
            )
        if members is None:
            continue
        if not isinstance(members, list):
            raise invalid_param("body", f"permissions.{name}", f'"{members}" is not iterable')
        for index, member in enumerate(members):
            if not isinstance(member, str):
                raise invalid_param(
                    "body", f"permissions.{name}.{index}", f"{json.dumps(member)} is not a string"
                )
    return permissions


_ENVIRON_KEYS = {"If-Match": "HTTP_IF_MATCH", "If-None-Match": "HTTP_IF_NONE_MATCH"}


def precondition(environ, header):
    """``None``, ``"*"`` or the integer timestamp in an If-Match / If-None-Match header."""
    key = _ENVIRON_KEYS.get(header) or "HTTP_" + header.upper().replace("-", "_")
    value = environ.get(key)
    if value is None:
        return None
    value = value.strip()
    if not value:  # an empty header counts as absent, as in Kinto
        return None
    if value == "*":
        return "*"
    match = _ETAG.fullmatch(value)
    if not match:
        raise invalid_param("header", header, "The value should be integer between double quotes.")
    return int(match.group(1))
