"""``POST /v1/batch``: several requests in one (protocol section 13).

Each sub-request runs through the whole WSGI stack (edge rules, auth,
routing) exactly like a standalone request, one after the other, and all of
them in one storage commit: a 5xx sub-response undoes the whole batch, as in
Kinto; a 4xx one undoes only its own writes.
"""

import io
import json
from urllib.parse import unquote, urlsplit

import bottle

from . import errors
from . import request as req
from .accesslog import REQUEST_LOG_KEY

METHODS = ("GET", "HEAD", "DELETE", "TRACE", "POST", "PUT", "PATCH")
REQUEST_KEYS = ("method", "path", "headers", "body")
MAX_REDIRECTS = 3
RECURSIVE = "Recursive call on /batch endpoint is forbidden."
# Set in the environ of every sub-request: a batch never runs inside a batch.
SUBREQUEST_KEY = "kintofs.batch.subrequest"


def add_batch_route(service):
    @service.app.route("/v1/batch", ["POST"])
    def batch():
        outer = bottle.request.environ
        if outer.get(SUBREQUEST_KEY):
            # parse_batch refuses every spelling of this route; this is the
            # second lock, so that one batch never runs more than
            # batch_max_requests sub-requests, nested or not.
            raise _fail("requests", RECURSIVE)
        settings = service.settings
        req.content_type_of(outer.get("CONTENT_TYPE"), ("application/json",))
        body = req.parse_json(
            req.read_body(outer, settings["max_request_body_bytes"]), settings["max_json_depth"]
        )
        requests = parse_batch(body, settings["batch_max_requests"])
        responses = []
        # One commit for the whole batch (fsstore/commit.py): its writes are
        # durable together when it ends, or undone together.
        with service.store.commit() as commit:
            try:
                for sub in requests:
                    response = run_subrequest(service.wsgi, outer, sub)
                    if response["status"] >= 500:
                        # Kinto: the batch fails as its sub-request did (Retry-After
                        # included), and every earlier write of the batch is undone.
                        commit.abort()
                        retry = {k: v for k, v in response["headers"].items() if k == "Retry-After"}
                        return errors.json_response(response["status"], response["body"], retry)
                    responses.append(response)
            finally:
                bottle.request.bind(outer)  # sub-requests rebound the thread-local request
        return errors.json_response(200, {"responses": responses})


def _fail(name, description):
    return errors.invalid_param("body", name, description)


def parse_batch(body, max_requests):
    """The sub-requests, with ``defaults`` merged in, or Kinto's 400."""
    if not isinstance(body, dict):
        raise req.not_a_mapping("", body)
    unknown = {k: v for k, v in body.items() if k not in ("requests", "defaults")}
    if unknown:
        raise _fail("", f'Unrecognized keys in mapping: "{unknown!r}"')
    if "requests" not in body:
        raise _fail("requests", "requests in body: Required")
    requests, defaults = body["requests"], body.get("defaults", {})
    if not isinstance(requests, list):
        raise _fail("requests", f'"{requests}" is not iterable')
    if max_requests and len(requests) > max_requests:
        raise _fail("requests", f"Number of requests is limited to {max_requests}")
    if not isinstance(defaults, dict):
        raise _fail("defaults", f'"{defaults}" is not a mapping type')
    _check_request(defaults, "defaults", path_required=False)
    merged = []
    for index, sub in enumerate(requests):
        if not isinstance(sub, dict):
            raise _fail(f"requests.{index}", f'"{sub}" is not a mapping type')
        sub = deep_merge(defaults, sub)
        _check_request(sub, f"requests.{index}", path_required=True)
        merged.append(sub)
    if any(is_recursive(sub["path"]) for sub in merged):  # after the schema, as Kinto
        raise _fail("requests", RECURSIVE)
    return merged


def normalized_path(path):
    """A sub-request path spelled one way: the route it names, without ``/v1``.

    The query is cut, the rest percent-decoded (as run_subrequest hands it
    to the WSGI stack), empty and ``.`` segments dropped, ``..`` segments
    resolved, the ``/v1`` prefix and any trailing slash removed:
    ``/v1//x/../%62atch/`` is ``/batch``.
    """
    segments = []
    for segment in unquote(path.partition("?")[0]).split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment not in ("", "."):
            segments.append(segment)
    if segments[:1] == ["v1"]:
        del segments[0]
    return "/" + "/".join(segments)


def is_recursive(path):
    """Kinto's rule, a path holding ``/batch``, applied to every spelling of it.

    Kinto tests the raw path (query included) only, so ``/v1/%62atch``,
    decoded later, nests batches there. The router sees the decoded path; a
    server that resolves ``..`` and ``//`` would see the normalized one:
    ``/batch`` in any of the three is refused, so no spelling reaches this route.
    """
    route = path.partition("?")[0]
    return any("/batch" in spelling for spelling in (path, unquote(route), normalized_path(route)))


def _check_request(sub, name, path_required):
    unknown = {k: v for k, v in sub.items() if k not in REQUEST_KEYS}
    if unknown:
        raise _fail(name, f'Unrecognized keys in mapping: "{unknown!r}"')
    path = sub.get("path")
    if path is None and path_required:
        raise _fail(f"{name}.path", f"{name}.path in body: Required")
    if path is not None and (not isinstance(path, str) or not path.startswith("/")):
        raise _fail(f"{name}.path", f"{name}.path in body: String does not match expected pattern")
    method = sub.get("method", "GET")
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise _fail(f"{name}.method", f'"{method}" is not one of {", ".join(METHODS)}')
    headers = sub.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise _fail(f"{name}.headers", "headers should be an object of strings")
    if "body" in sub and not isinstance(sub["body"], dict):
        raise _fail(f"{name}.body", f'"{sub["body"]}" is not a mapping type')


def deep_merge(defaults, sub):
    result = dict(sub)
    for key, value in defaults.items():
        if key not in result:
            result[key] = value
        elif isinstance(value, dict) and isinstance(result[key], dict):
            result[key] = deep_merge(value, result[key])
    return result


def run_subrequest(wsgi, outer, sub):
    path, _, query = sub["path"].partition("?")
    if not (path == "/v1" or path.startswith("/v1/")):
        path = "/v1" + path
    method = sub.get("method", "GET").upper()
    body = json.dumps(sub["body"]).encode() if "body" in sub else b""
    for _ in range(MAX_REDIRECTS + 1):
        environ = _sub_environ(outer, method, path, query, sub.get("headers", {}), body)
        status, headers, content = _call(wsgi, environ)
        if status != 307:
            break
        target = urlsplit(dict(headers).get("Location", ""))
        if is_recursive(target.path):
            break  # never followed to /batch: the 307 is the sub-response
        path, query = target.path or "/", target.query
    return {
        "status": status,
        "path": unquote(path),
        "headers": dict(headers),
        "body": _decode(content),
    }


def _sub_environ(outer, method, path, query, headers, body):
    environ = {
        key: value
        for key, value in outer.items()
        if key.startswith(("HTTP_", "wsgi.", "SERVER_", "REMOTE_"))
    }
    environ.pop("HTTP_CONTENT_LENGTH", None)
    if REQUEST_LOG_KEY in outer:  # the access log names the batch's user
        environ[REQUEST_LOG_KEY] = outer[REQUEST_LOG_KEY]
    environ[SUBREQUEST_KEY] = True  # no header can set it: theirs all start with HTTP_
    environ.update(
        {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(path).encode("utf-8").decode("latin-1"),  # WSGI's str-of-bytes
            "QUERY_STRING": query,
            "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": "application/json; charset=utf-8" if body else "",
            "wsgi.input": io.BytesIO(body),
        }
    )
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            continue  # a body is always sent as JSON, as Kinto does
        environ["HTTP_" + key] = value
    return environ


def _call(wsgi, environ):
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"] = int(status.split(" ", 1)[0])
        captured["headers"] = headers

    chunks = wsgi(environ, start_response)
    try:
        content = b"".join(chunks)
    finally:
        if hasattr(chunks, "close"):
            chunks.close()
    return captured["status"], captured["headers"], content


def _decode(content):
    if not content:
        return ""
    try:
        return json.loads(content)
    except ValueError:
        return content.decode("utf-8", "replace")
