"""Kinto's JSON error responses (section 11 of the protocol reference).

Views raise these; bottle turns a raised HTTPResponse into the reply.
"""

from bottle import HTTPResponse

from .jsontext import dumps_function

REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
    507: "Insufficient Storage",
}

# errno values (protocol 11.2)
MISSING_AUTH_TOKEN = 104
INVALID_PARAMETERS = 107
INVALID_RESOURCE_ID = 110
MISSING_RESOURCE = 111
CONTENT_LENGTH_MISSING = 112
REQUEST_TOO_LARGE = 113
MODIFIED_MEANWHILE = 114
METHOD_NOT_ALLOWED = 115
VERSION_NOT_AVAILABLE = 116
TOO_MANY_REQUESTS = 117
FORBIDDEN = 121
BACKEND = 201
UNDEFINED = 999

JSON_HEADERS = {"Content-Type": "application/json"}

# json.dumps(body, separators=(",", ":")), its encoder made once.
_encode = dumps_function(separators=(",", ":"))


def json_response(status, body, headers=None):
    # Bytes already (the JSON is ASCII): bottle sends them as they are.
    data = b"" if body is None and status == 304 else _encode(body).encode("ascii")
    return HTTPResponse(data, status, {**JSON_HEADERS, **(headers or {})})


def http_error(status, errno, *, message=None, details=None, error=None, headers=None):
    body = {"code": status, "errno": errno, "error": error or REASONS[status]}
    if message is not None:
        body["message"] = message
    if details is not None:
        body["details"] = details
    return json_response(status, body, headers)


def invalid(details, status=400):
    """A validation error (errno 107) from ``[{location, name, description}]``."""
    details = sorted(details, key=lambda d: (d["name"] is not None, str(d["name"] or "")))
    return http_error(
        status,
        INVALID_PARAMETERS,
        error="Invalid parameters",
        message=_message_of(details[0]),
        details=details,
    )


def invalid_param(location, name, description, status=400):
    return invalid([{"location": location, "name": name, "description": description}], status)


def _message_of(detail):
    name, description = detail["name"], detail["description"]
    if name is None:
        return f"{detail['location']}: {description}"
    # str(): a schema error may name an array index or a value (Kinto does the same).
    if str(name) in description:  # "" (the whole body) is in every description
        return description
    return f"{name} in {detail['location']}: {description}"


def invalid_object_id():
    return invalid_param("path", None, "Invalid object id")


def unauthorized(challenges=('Basic realm="Realm"',)):
    """401, with one ``WWW-Authenticate`` per auth policy, as Kinto sends."""
    response = http_error(
        401, MISSING_AUTH_TOKEN, message="Please authenticate yourself to use this endpoint."
    )
    for challenge in challenges:
        response.add_header("WWW-Authenticate", challenge)
    return response


def forbidden():
    return http_error(403, FORBIDDEN, message="This user cannot access this resource.")


def object_not_found(kind, object_id):
    return http_error(404, INVALID_RESOURCE_ID, details={"id": object_id, "resource_name": kind})


def parent_not_found(kind, object_id):
    return http_error(404, MISSING_RESOURCE, details={"id": object_id, "resource_name": kind})


def unknown_url():
    return http_error(
        404, MISSING_RESOURCE, message="The resource you are looking for could not be found."
    )


def method_not_allowed(allow):
    return http_error(
        405,
        METHOD_NOT_ALLOWED,
        message="Method not allowed on this endpoint.",
        headers={"Allow": ", ".join(allow)} if allow else None,
    )


def precondition_failed(existing=None, headers=None):
    details = {"existing": existing} if existing is not None else None
    return http_error(
        412,
        MODIFIED_MEANWHILE,
        message="Resource was modified meanwhile",
        details=details,
        headers=headers,
    )


def too_large(limit):
    return http_error(413, REQUEST_TOO_LARGE, message=f"Request body is larger than {limit} bytes.")


def too_many_requests(retry_after):
    return http_error(
        429,
        TOO_MANY_REQUESTS,
        headers={"Retry-After": str(retry_after)},
        message="Too many failed logins from this address, retry later.",
    )


def service_unavailable(retry_after, message=None):
    return http_error(
        503,
        BACKEND,
        headers={"Retry-After": str(retry_after)},
        message=message
        or "Service temporary unavailable due to overloading or maintenance, please retry later.",
    )


def insufficient_storage(retry_after):
    return http_error(
        507,
        BACKEND,
        headers={"Retry-After": str(retry_after)},
        message="The server's disk refused the write; nothing was changed. "
        "Retry once space is freed.",
    )


def internal_error(info="https://github.com/Kinto/kinto/issues/"):
    body = {
        "code": 500,
        "errno": UNDEFINED,
        "error": "Internal Server Error",
        "message": "A programmatic error occurred, developers have been informed.",
        "info": info,
    }
    return json_response(500, body)
