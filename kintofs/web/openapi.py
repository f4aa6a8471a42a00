"""The OpenAPI 2.0 (Swagger) description of the running server: ``GET /v1/__api__``.

It is made from what serves requests, so that it cannot drift from them:

* every route bottle holds (the resources of ``create_app``, the utility
  views, the routes plugins add with ``Service.add_route``), each once;
* for a route served for "ANY" method, the methods a CORS preflight of its
  path announces (``EdgeMiddleware.allowed_methods``), which is the server's
  own statement of them;
* for a resource, kinds.py: the kind its path names, the permissions its
  ACL holds and its schema fields (the request and response bodies).

``ROUTES`` only adds Kinto's tags, operation ids and answers for the paths
kintofs knows; a route it does not know still appears, with a generic entry
(``tests/test_openapi.py`` checks that every route is there).  Tags and
operation ids are Kinto 26.5's where Kinto has the endpoint, typos included
("Permissionss"), so that clients generated from either document agree.

The document is built once per service.  ``host`` and ``schemes`` are the
request's, as the server's other URLs (``http_host``/``http_scheme`` when
set); Kinto keeps the host of the first request that asked.
"""

import re
import weakref

from .. import ids, kinds, query
from .app import API_VERSION, base_url

# -- building blocks ---------------------------------------------------------

ETAG = {"type": "string", "pattern": r'^"([0-9]+?)"$|\*'}
TIMESTAMP = {"type": "integer", "minimum": 0, "maximum": query.MAX_INTEGER}
ANY_OBJECT = {"type": "object", "additionalProperties": {}}
STRINGS = {"type": "array", "items": {"type": "string"}}

REASONS = {
    400: "The request is invalid.",
    401: "The request is missing authentication headers.",
    403: "The user is not allowed to perform the operation, or the resource is not accessible.",
    404: "The object or one of its parents does not exist.",
    405: "The method is not allowed (a read-only server answers only GET and HEAD).",
    406: "The client doesn't accept supported responses Content-Type.",
    412: "Object was changed or deleted since value in `If-Match` header.",
    413: "The request body is too large.",
    415: "The request's Content-Type is not supported.",
    416: "The `Range` asks for bytes the file does not have.",
    429: "Too many failed logins from this address; see `Retry-After`.",
    503: "The storage is busy, or the server holds as many streams as it can.",
    507: "The disk refused the write; nothing was changed.",
}

# Every view may answer these: the login rate limit, busy storage, a read-only server.
ALWAYS = (405, 429, 503)
READ_ERRORS = (400, 401, 403, 404, 406, 412)
WRITE_ERRORS = (*READ_ERRORS, 413, 415, 507)


def _param(name, where, schema=None, required=False):
    return {"name": name, "in": where, "required": required, **(schema or {"type": "string"})}


PRECONDITIONS = [_param("If-Match", "header", ETAG), _param("If-None-Match", "header", ETAG)]
FIELDS = _param("_fields", "query", {**STRINGS, "collectionFormat": "csv"})
LIST_QUERY = [
    _param("_limit", "query", TIMESTAMP),
    _param("_sort", "query", {**STRINGS, "collectionFormat": "csv"}),
    _param("_token", "query"),
    _param("_since", "query", TIMESTAMP),
    _param("_to", "query", TIMESTAMP),
    _param("_before", "query", TIMESTAMP),
    _param("id", "query"),
    _param("last_modified", "query", TIMESTAMP),
    FIELDS,
]
TIMESTAMP_HEADERS = {"ETag": ETAG, "Last-Modified": {"type": "string"}}
LIST_HEADERS = {**TIMESTAMP_HEADERS, "Next-Page": {"type": "string"}}
COUNT_HEADERS = {
    **TIMESTAMP_HEADERS,
    "Total-Objects": {"type": "string"},
    "Total-Records": {"type": "string"},
}

DEFINITIONS = {
    "Error": {
        "type": "object",
        "required": ["code", "errno", "error"],
        "properties": {
            "code": {"type": "integer"},
            "errno": {"type": "integer"},
            "error": {"type": "string"},
            "message": {"type": "string"},
            "info": {"type": "string"},
            "details": {},
        },
    },
    "List": {
        "type": "object",
        "required": ["data"],
        "properties": {"data": {"type": "array", "items": ANY_OBJECT}},
    },
    "BatchRequest": {
        "type": "object",
        "required": ["requests"],
        "properties": {
            "defaults": {"$ref": "#/definitions/BatchSubrequest"},
            "requests": {
                "type": "array",
                "items": {
                    "allOf": [{"$ref": "#/definitions/BatchSubrequest"}, {"required": ["path"]}]
                },
            },
        },
    },
    "BatchSubrequest": {
        "type": "object",
        "properties": {
            "method": {
                "type": "string",
                "enum": ["GET", "HEAD", "DELETE", "TRACE", "POST", "PUT", "PATCH"],
            },
            "path": {"type": "string", "pattern": "^/"},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "body": ANY_OBJECT,
        },
    },
    "BatchResponse": {
        "type": "object",
        "required": ["responses"],
        "properties": {
            "responses": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["status", "path", "headers", "body"],
                    "properties": {
                        "status": {"type": "integer"},
                        "path": {"type": "string"},
                        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                        "body": {},
                    },
                },
            }
        },
    },
}

# What the web layer checks in an object's data besides its kind's schema
# fields (web/fields.py, the accounts plugin).
DATA_FIELDS = {
    "collection": {"cache_expires": {"type": "integer"}},
    "group": {"members": STRINGS},
    "account": {"password": {"type": "string"}},
}
REQUIRED_DATA = {"account": ["password"]}


def object_definition(kind):
    """The ``{"data", "permissions"}`` envelope of ``kind`` (a kinds.KINDS name)."""
    info = kinds.KINDS[kind]
    data = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "last_modified": {"type": "integer"},
            **{name: ANY_OBJECT for name in info.schema_fields},
            **DATA_FIELDS.get(kind, {}),
        },
        "additionalProperties": {},
    }
    envelope = {
        "type": "object",
        "properties": {
            "data": data,
            "permissions": {
                "type": "object",
                "properties": {name: STRINGS for name in info.permissions},
            },
        },
    }
    if kind in REQUIRED_DATA:
        data["required"] = REQUIRED_DATA[kind]
        envelope["required"] = ["data"]
    return envelope


def definition_name(kind):
    return kind.capitalize()


def _ref(name):
    return {"$ref": f"#/definitions/{name}"}


def _answer(description, schema=None, headers=None):
    found = {"description": description}
    if schema is not None:
        found["schema"] = schema
    if headers:
        found["headers"] = headers
    return found


def operation(tag, operation_id, answers, errors=(), params=(), *, produces=None, consumes=None):
    """One operation; ``answers`` are its successes, ``errors`` the statuses of
    Kinto errors it may answer besides those of ALWAYS."""
    responses = {str(status): answer for status, answer in answers.items()}
    for status in sorted({*errors, *ALWAYS}):
        responses.setdefault(str(status), _answer(REASONS[status], _ref("Error")))
    found = {
        "tags": [tag],
        "operationId": operation_id,
        "produces": produces or ["application/json"],
        "parameters": list(params),
        "responses": responses,
    }
    if consumes:
        found["consumes"] = consumes
    return found


def body_param(schema):
    return {"name": "body", "in": "body", "required": False, "schema": schema}


NOT_MODIFIED = {304: _answer("Not modified since `If-None-Match`.", None, TIMESTAMP_HEADERS)}
LISTED = {200: _answer("Return a list of matching objects.", _ref("List"), LIST_HEADERS)}
RESPONSE_BEHAVIOR = _param(
    "Response-Behavior", "header", {"type": "string", "enum": ["full", "light", "diff"]}
)
JSON_OR_MERGE = ["application/json", "application/merge-patch+json"]


def list_operations(tag, plural):
    """GET and HEAD of a list, as Kinto names them (``get_buckets``)."""
    return {
        "get": operation(
            tag,
            f"get_{plural}",
            {**LISTED, **NOT_MODIFIED},
            READ_ERRORS,
            [*LIST_QUERY, *PRECONDITIONS],
        ),
        "head": operation(
            tag,
            f"head_{plural}",
            {200: _answer("The list's headers.", None, COUNT_HEADERS), **NOT_MODIFIED},
            READ_ERRORS,
            [*LIST_QUERY, *PRECONDITIONS],
        ),
    }


def resource_operations(kind, plural):
    """{method: operation} of a kind's plural or object endpoint, named as Kinto does."""
    info = kinds.KINDS[kind]
    tag = info.plural.capitalize()
    envelope = _ref(definition_name(kind))
    stamped = dict(headers=TIMESTAMP_HEADERS)
    if plural:
        return {
            **list_operations(tag, info.plural),
            "post": operation(
                tag,
                f"create_{kind}",
                {
                    200: _answer("Return an existing object.", envelope, **stamped),
                    201: _answer("Return a created object.", envelope, **stamped),
                },
                WRITE_ERRORS,
                [body_param(envelope), *PRECONDITIONS],
                consumes=["application/json"],
            ),
            "delete": operation(
                tag,
                f"delete_{info.plural}",
                {200: _answer("Return the deleted objects.", _ref("List"), LIST_HEADERS)},
                WRITE_ERRORS,
                [*LIST_QUERY, *PRECONDITIONS],
            ),
        }
    target = {200: _answer("Return the target object.", envelope, **stamped)}
    return {
        "get": operation(
            tag, f"get_{kind}", {**target, **NOT_MODIFIED}, READ_ERRORS, [FIELDS, *PRECONDITIONS]
        ),
        "head": operation(
            tag,
            f"head_{kind}",
            {200: _answer("The object's headers.", None, **stamped), **NOT_MODIFIED},
            READ_ERRORS,
            [FIELDS, *PRECONDITIONS],
        ),
        "put": operation(
            tag,
            f"update_{kind}",
            {**target, 201: _answer("Return created object.", envelope, **stamped)},
            WRITE_ERRORS,
            [body_param(envelope), *PRECONDITIONS],
            consumes=["application/json"],
        ),
        "patch": operation(
            tag,
            f"patch_{kind}",
            target,
            WRITE_ERRORS,
            [RESPONSE_BEHAVIOR, body_param(envelope), *PRECONDITIONS],
            consumes=JSON_OR_MERGE,
        ),
        "delete": operation(
            tag,
            f"delete_{kind}",
            {200: _answer("Return the deleted object's tombstone.", _ref("Deleted"), **stamped)},
            WRITE_ERRORS,
            [_param("last_modified", "query", TIMESTAMP), *PRECONDITIONS],
        ),
    }


# -- the routes kintofs knows ------------------------------------------------------

UTILITY = "Utilities"
SERVED = _answer("See the description of this endpoint.", ANY_OBJECT)


def utility(operation_id, description, answers=None):
    answers = answers or {200: _answer(description, ANY_OBJECT)}
    return {
        "get": operation(UTILITY, operation_id, answers),
        "head": operation(UTILITY, f"head_{operation_id.strip('_')}", {200: _answer(description)}),
    }


def renamed(operations, old, new):
    """``operations`` with ``old`` replaced by ``new`` in their ids (no two may share one)."""
    return {
        method: {**found, "operationId": found["operationId"].replace(old, new, 1)}
        for method, found in operations.items()
    }


EVENTS = ["text/event-stream"]
EVENTS_QUERY = [_param("_since", "query"), _param("_auth", "query")]
ATTACHMENT_FORM = [
    _param("attachment", "formData", {"type": "file"}, required=True),
    _param("data", "formData"),
    _param("permissions", "formData"),
]
ATTACHED = {
    "type": "object",
    "required": ["filename", "hash", "location", "mimetype", "size"],
    "properties": {
        "filename": {"type": "string"},
        "hash": {"type": "string"},
        "location": {"type": "string"},
        "mimetype": {"type": "string"},
        "size": {"type": "integer"},
    },
}


def events(operation_id, scope):
    return {
        "get": operation(
            "Events",
            operation_id,
            {200: _answer(f"Server-Sent Events: every change of {scope} the caller may read.")},
            (400, 404, 406),
            EVENTS_QUERY + [_param("Last-Event-ID", "header")],
            produces=EVENTS,
        )
    }


def openid(name):
    """Kinto's openid plugin: a redirect to the provider, or back to the callback."""
    return {
        "get": operation(
            f"Openid_{name}",
            f"get_openid_{name}",
            {307: _answer("A redirect (see `Location`).")},
            (400, 404),
        )
    }


def admin(operation_id, answers):
    return {
        method: operation("Admin", f"{method}_{operation_id}", answers, (404,), produces=["*/*"])
        for method in ("get", "head")
    }


# bottle rule -> {method: operation}.  Resources (a path of kinds' plurals and
# ids) need no entry: kinds.py names them.
ROUTES = {
    "/v1/": utility("server_info", "Return information about the running Instance."),
    "/v1/__heartbeat__": utility(
        "__heartbeat__",
        "Server is working properly.",
        {
            200: _answer("Server is working properly.", ANY_OBJECT),
            503: _answer("One or more subsystems failing.", ANY_OBJECT),
        },
    ),
    "/v1/__lbheartbeat__": utility("__lbheartbeat__", "Return successfully."),
    "/v1/__version__": utility("__version__", "Return the running version."),
    "/v1/__api__": utility(
        "get_openapi_spec", "Return an OpenAPI description of the running instance."
    ),
    "/v1/contribute.json": utility("contribute", "Return open source information."),
    "/v1/batch": {
        "post": operation(
            "Batch",
            "batch",
            {200: _answer("Return a list of operation responses.", _ref("BatchResponse"))},
            (400, 406, 413, 415, 507),
            [{**body_param(_ref("BatchRequest")), "required": True}],
            consumes=["application/json"],
        )
    },
    "/v1/__flush__": {
        "post": operation("Flush", "create_flush", {202: _answer("Every object is gone.")})
    },
    "/v1/permissions": list_operations("Permissionss", "permissionss"),
    "/v1/buckets/<bucket>/snapshot/collections/<spec>": {
        method: operation(
            "History_snapshot",
            f"{method}_history_snapshot",
            {200: _answer("Returns the records at the given timestamp.", _ref("List"))},
            READ_ERRORS,
        )
        for method in ("get", "head")
    },
    "/v1/buckets/monitor/collections/changes/records": list_operations("Changes", "changes"),
    "/v1/buckets/<bucket>/collections/<collection>/records/<record>/attachment": {
        "post": operation(
            "Attachment",
            "create_attachment",
            {
                200: _answer("The record's file was replaced.", ATTACHED),
                201: _answer("The record was created with its file.", ATTACHED),
            },
            WRITE_ERRORS,
            ATTACHMENT_FORM,
            consumes=["multipart/form-data"],
        ),
        "delete": operation(
            "Attachment",
            "delete_attachment",
            {204: _answer("The record keeps `attachment: null`.")},
            WRITE_ERRORS,
        ),
    },
    "/v1/attachments/<bucket>/<collection>/<record>": {
        method: operation(
            "Attachment",
            f"{method}_attachment_file",
            {
                200: _answer("The file."),
                206: _answer("Part of the file (`Range`)."),
                304: _answer("Not modified since `If-None-Match`."),
            },
            (401, 403, 404, 412, 416),
            [_param("Range", "header"), *PRECONDITIONS],
            produces=["*/*"],
        )
        for method in ("get", "head")
    },
    "/v1/buckets/default": renamed(resource_operations("bucket", False), "_", "_default_"),
    "/v1/buckets/default/<subpath:path>": {
        method: operation(
            "Buckets",
            f"{method}_default_bucket_subpath",
            {200: SERVED, 201: SERVED, 304: _answer("Not modified.")},
            WRITE_ERRORS,
        )
        for method in ("get", "head", "post", "put", "patch", "delete")
    },
    "/v1/events": events("get_events", "every bucket"),
    "/v1/events/buckets/<bucket>": events("get_bucket_events", "the bucket"),
    "/v1/events/buckets/<bucket>/collections/<collection>": events(
        "get_collection_events", "the collection"
    ),
    "/v1/openid/<provider>/login": openid("login"),
    "/v1/openid/<provider>/token": openid("token"),
    "/v1/admin": admin("admin_redirect", {307: _answer("A redirect to `/v1/admin/`.")}),
    "/v1/admin/": admin("admin", {200: _answer("Kinto Admin's page.")}),
    "/v1/admin/<path:path>": admin("admin_file", {200: _answer("A file of Kinto Admin.")}),
}

# Rules whose one parameter is two in Kinto's path: the rule as Kinto spells it.
KINTO_RULES = {
    "/v1/buckets/<bucket>/snapshot/collections/<spec>": (
        "/v1/buckets/<bucket>/snapshot/collections/<collection>@<timestamp>"
    ),
}
PARAM_SCHEMAS = {"timestamp": {"type": "integer"}}

# Kinto's endpoints that need no permission: their security is [].
PUBLIC = {UTILITY, "Batch", "Flush"}


# -- from the routes to the document ---------------------------------------------

_PARAM = re.compile(r"<(\w+)(?::\w+)?>")


def path_parameters(rule):
    """``/v1/buckets/<bucket>/groups/<group>`` -> ``/buckets/{bucket_id}/groups/{id}``
    and its path parameters: Kinto's names, each kind's id pattern."""
    segments = KINTO_RULES.get(rule, rule).removeprefix("/v1").split("/")
    params = []

    def parameter(match, own=None):
        name = match.group(1)
        kind = own or kinds.KINDS.get(name)
        openapi_name = "id" if own else f"{name}_id" if kind else name
        schema = PARAM_SCHEMAS.get(name, {"type": "string"})
        if kind is not None:
            pattern = f"^{kind.id_pattern.pattern}$"
            schema = {**schema, "pattern": pattern, "maxLength": ids.MAX_ID_LENGTH}
        params.append(_param(openapi_name, "path", schema, required=True))
        return "{" + openapi_name + "}"

    resource = resource_of(rule) is not None
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        own = kinds.of_plural(segments[index - 1]) if resource and last else None
        segments[index] = _PARAM.sub(lambda match, own=own: parameter(match, own), segment)
    return "/".join(segments) or "/", params


def resource_of(rule):
    """``(kind, plural?)`` when ``rule`` is a chain of kinds' plurals and ids, else None."""
    parts = rule.removeprefix("/v1").split("/")[1:]
    parent = None
    for index in range(0, len(parts), 2):
        kind = kinds.of_plural(parts[index])
        if kind is None or kind.parent != parent:
            return None
        if index + 1 < len(parts) and not _PARAM.fullmatch(parts[index + 1]):
            return None
        parent = kind.name
    return (parent, len(parts) % 2 == 1) if parent else None


def generic(rule, method):
    """A route that ROUTES does not know: there, with its methods, nothing more said."""
    slug = re.sub(r"\W+", "_", _PARAM.sub(r"\1", rule.removeprefix("/v1"))).strip("_")
    found = operation("Other", f"{method}_{slug or 'root'}", {200: SERVED})
    found["responses"]["default"] = _answer("An error.", _ref("Error"))
    return found


def served_methods(service, route):
    """The methods ``route`` (a bottle Route) serves, lowercase, without OPTIONS."""
    if route.method != "ANY":
        return {route.method.lower()}
    allowed = service.wsgi.allowed_methods(_PARAM.sub("x", route.rule)).split(",")
    return {method.lower() for method in allowed if method != "OPTIONS"}


def route_methods(service):
    """``{rule: methods}`` of every route the app serves, in the app's order."""
    found = {}
    for route in service.app.routes:
        found.setdefault(route.rule, set()).update(served_methods(service, route))
    return found


def known_operations(rule):
    if rule in ROUTES:
        return ROUTES[rule]
    resource = resource_of(rule)
    return resource_operations(*resource) if resource else {}


def described_paths(service, security):
    """``paths``; ``security`` is that of the operations that need a permission."""
    paths = {}
    for rule, methods in route_methods(service).items():
        path, params = path_parameters(rule)
        entry = paths.setdefault(path, {"parameters": params} if params else {})
        known = known_operations(rule)
        if ":path>" in rule:  # forwards anything below it: its entry says what
            methods = methods | known.keys()
        for method in sorted(methods):
            described = known.get(method) or generic(rule, method)
            public = described["tags"][0] in PUBLIC
            entry[method] = {**described, "security": [] if public else security}
    return paths


DELETED = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "type": "object",
            "required": ["id", "last_modified", "deleted"],
            "properties": {
                "id": {"type": "string"},
                "last_modified": {"type": "integer"},
                "deleted": {"type": "boolean"},
            },
        }
    },
}


def security_definitions(service):
    """Kinto's ``basicauth`` for Basic credentials (its accounts too), and one
    scheme per other policy in use: the bearer tokens of an OpenID provider."""
    found = {}
    for name in service.settings["auth_policies"]:
        if name in ("basicauth", "account"):
            found["basicauth"] = {"type": "basic"}
        elif name in service.auth_policies:
            found[name] = {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": f"An access token of the {name} OpenID provider",
            }
    return found


def build(service):
    """The document, but ``host`` and ``schemes``."""
    schemes = security_definitions(service)
    paths = described_paths(service, [{name: []} for name in schemes])
    tags = {
        described["tags"][0]: None
        for entry in paths.values()
        for method, described in entry.items()
        if method != "parameters"
    }
    return {
        "swagger": "2.0",
        "info": {"title": service.settings["project_name"], "version": API_VERSION},
        "basePath": "/v1",
        "securityDefinitions": schemes,
        "tags": [{"name": tag} for tag in tags],
        "paths": paths,
        "definitions": {
            **DEFINITIONS,
            "Deleted": DELETED,
            **{definition_name(kind): object_definition(kind) for kind in kinds.KINDS},
        },
    }


_BUILT = weakref.WeakKeyDictionary()


def document(service, environ):
    """The document for this request: built once per service, with its host and scheme."""
    built = _BUILT.get(service)
    if built is None:
        built = _BUILT[service] = build(service)
    scheme, _, host = base_url(environ, service.settings).partition("://")
    return {**built, "host": host, "schemes": [scheme]}
