"""The WSGI application: routes, the request state, and Kinto's edge rules.

Layers, outermost first:

* :class:`EdgeMiddleware` — what happens before routing in Kinto: CORS
  preflight, version-prefix and trailing-slash redirects, read-only mode,
  and the headers every response carries.
* the bottle app — routes to :class:`~kintofs.web.resource.ResourceView`
  and the utility views, and turns unexpected errors into Kinto JSON.
"""

import json
import logging
import re
import sys
import time
from email.utils import formatdate
from fnmatch import fnmatchcase
from functools import cached_property
from urllib.parse import parse_qsl, quote, unquote_to_bytes

import bottle

from ..acl import MembershipIndex, principals_of
from ..feed import AFTER_COMMIT, ChangeFeed
from ..fsstore import StorageBusy, StorageFull
from ..kinds import KINDS as KINDS_INFO
from . import errors, ratelimit
from .accesslog import note_userid
from .auth import authenticate, basicauth_policy
from .resource import EXPOSE_ALL_HEADERS, KINDS, ResourceView
from .tokens import SingleUseTokens

logger = logging.getLogger("kintofs")

API_VERSION = "1.23"

EXPOSED_HEADERS = (
    "Backoff",
    "Retry-After",
    "Alert",
    "Content-Length",
    "Content-Type",
    "ETag",
    "Last-Modified",
    "Next-Page",
    "Total-Objects",
    "Total-Records",
    "Cache-Control",
    "Expires",
    "Pragma",
)

# What Kinto exposes on every response; resource views expose them all.
BASE_EXPOSED_HEADERS = EXPOSED_HEADERS[:5]

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; ",
    "X-Content-Type-Options": "nosniff",
}

CANONICAL_NAMES = {name.lower(): name for name in (*EXPOSED_HEADERS, "WWW-Authenticate")}

# What _with_common_headers adds, worked out once.
_SECURITY_BY_NAME = [(name.lower(), (name, value)) for name, value in SECURITY_HEADERS.items()]
_EXPOSE_ALL = ("Access-Control-Expose-Headers", ", ".join(EXPOSED_HEADERS))
_EXPOSE_BASE = ("Access-Control-Expose-Headers", ", ".join(BASE_EXPOSED_HEADERS))

PLURAL_METHODS = "HEAD,GET,POST,DELETE,OPTIONS"
OBJECT_METHODS = "GET,HEAD,PUT,PATCH,DELETE,OPTIONS"


def unreadable_files_warning(store):
    """The heartbeat's ``unreadable_files``: ``{"count": n, "paths": [...]}``, or None."""
    found = store.unreadable_files()
    return {"count": found.count, "paths": found.paths} if found.count else None


class Service:
    """Everything that lives as long as the daemon: settings, store, plugins' hooks."""

    def __init__(self, settings, store, secret):
        self.settings = settings
        self.store = store
        self.auth_policies = {"basicauth": basicauth_policy(secret)}
        self.capabilities = {}
        self.memberships = MembershipIndex(store)
        self.feed = ChangeFeed()  # every change the API makes (feed.py)
        self.feed.subscribe(self._track_memberships, AFTER_COMMIT)
        self.validators = []  # callables(state, kind, parent, data, object_id=None)
        # A read-only server may sit on a read-only disk: it only needs to read.
        self.storage_check = store.readable if settings["readonly"] else store.healthy
        # Kinto's storage, permission and cache backends are one store here
        # (ACLs are files beside the data) and there is no cache to fail.
        self.heartbeat_checks = {
            "storage": self.storage_check,
            "permission": self.storage_check,
            "cache": lambda: True,
        }
        # Keys the heartbeat adds without failing (README, "Operating kintofs"):
        # name -> function returning a JSON value that is never false, or None
        # to leave the key out.  Kinto answers 503 only for a false value.
        self.heartbeat_warnings = {"unreadable_files": lambda: unreadable_files_warning(store)}
        self.hello_user_extensions = []  # callables(state, user_dict)
        self.preflight_methods = []  # (compiled path regex, "GET,HEAD,...") of plugins' routes
        self.delete_tokens = SingleUseTokens()  # Next-Page tokens of plural DELETE
        ratelimit.install(self)  # self.record_failed_login(addr) for policies that can fail
        self.app = bottle.Bottle()
        # Our views answer with HTTPResponse objects; unexpected errors are
        # turned into Kinto JSON by our own plugin, not bottle's HTML page.
        self.app.config.update({"catchall": False, "json.enable": False})

    # -- the plugin interface (docs/plugins.md; tests/test_docs.py checks it) --

    def add_capability(self, name, value):
        """A capability of the hello view: a dict, or a function of the request
        state returning one (for a URL on the host the client asked)."""
        self.capabilities[name] = value

    def add_auth_policy(self, name, policy):
        """An authentication policy, used when ``auth_policies`` names it (see web/auth.py)."""
        self.auth_policies[name] = policy

    def add_validator(self, validator):
        """``validator(state, kind, parent, data, object_id=None)`` runs before every
        object write and raises a Kinto error to refuse it; ``object_id`` is None
        when the server is about to generate one."""
        self.validators.append(validator)

    def add_heartbeat(self, name, check):
        """``check()`` -> bool, run by ``/__heartbeat__`` (a False answers 503)."""
        self.heartbeat_checks[name] = check

    def add_user_info(self, extend):
        """``extend(state, user)`` adds keys to the hello view's ``user`` object."""
        self.hello_user_extensions.append(extend)

    def add_route(self, path, methods, view, *, preflight=None):
        """Serve ``path`` (a bottle pattern such as ``/v1/buckets/<bucket>/history``)
        for ``methods`` (a list, or "ANY") with ``view(state, **ids)``; ``preflight``
        is the ``Allow`` list a CORS preflight of the path announces."""

        def callback(**ids):
            return view(RequestState(self, bottle.request.environ), **ids)

        self.app.route(path, methods, callback)
        if preflight:
            pattern = re.sub(r"<[^>:]+:path>", ".+", re.sub(r"<[^>:]+>", "[^/]+", path))
            self.preflight_methods.append((re.compile(f"^{pattern}$"), preflight))

    def dispatch(self, environ):
        """Serve ``environ`` with the route its path names now (default_bucket rewrites it)."""
        route, args = self.app.router.match(environ)
        return route.call(**args)

    # -- for the web layer --------------------------------------------------

    def policies(self):
        return [
            self.auth_policies[name]
            for name in self.settings["auth_policies"]
            if name in self.auth_policies
        ]

    def groups_of(self, userid):
        """Group URIs whose members include ``userid`` (acl.MembershipIndex)."""
        return self.memberships.groups_of(userid)

    def _track_memberships(self, change):
        self.memberships.object_changed(change.action, change.kind, change.uri, change.data)


class RequestState:
    """What views need to know about the request being served."""

    def __init__(self, service, environ):
        self.service = service
        self.environ = environ
        self.store = service.store
        self.settings = service.settings
        self.method = environ["REQUEST_METHOD"].upper()
        self.extras = {}  # what plugins keep for the rest of the request ("plugin.name" keys)
        self._stored = {}  # path -> stored object or None: see stored()
        query_string = environ.get("QUERY_STRING")
        self.query_params = (
            [
                (name.strip(), value)
                for name, value in parse_qsl(query_string, keep_blank_values=True)
            ]
            if query_string
            else []
        )
        ratelimit.refuse_if_blocked(service, environ)
        self.userid = authenticate(environ, service.policies())
        note_userid(environ, self.userid)  # for the access log

    @cached_property
    def principals(self):
        if self.userid is None:
            return principals_of(None)
        return principals_of(self.userid, self.service.groups_of(self.userid))

    @cached_property
    def own_principals(self):
        """The caller's principals but its groups: known without a membership lookup."""
        return principals_of(self.userid)

    def grants(self, test):
        """``test(principals)`` for the caller's principals, trying those
        without its groups first: most grants name the user itself or
        everyone, and then the group memberships need not be looked up.
        ``test`` must never turn False when given more principals (no
        permission check does)."""
        if "principals" not in self.__dict__ and self.userid is not None:
            if test(self.own_principals):
                return True
        return test(self.principals)

    def stored(self, path):
        """The stored object at ``path`` (``(("bucket", "b"), ...)``), or None.

        Read once per request: the existence checks, the permission checks
        and the validators of one request all look at the same ancestors.
        """
        path = tuple(path)
        if path not in self._stored:
            *parent, (kind, object_id) = path
            # No object has an id its kind refuses: no folder is looked up for one.
            possible = all(KINDS_INFO[k].valid_id(i) for k, i in path)
            self._stored[path] = (
                self.store.get(tuple(parent), kind, object_id) if possible else None
            )
        return self._stored[path]

    def denied(self):
        if self.userid is None:
            return errors.unauthorized(
                [self._challenge(name) for name in self.settings["auth_policies"]]
            )
        return errors.forbidden()

    def _challenge(self, policy_name):
        """A policy's ``WWW-Authenticate`` value: Basic, unless it says otherwise."""
        policy = self.service.auth_policies.get(policy_name)
        return getattr(policy, "challenge", 'Basic realm="Realm"')

    def validate(self, kind, parent, data, object_id=None):
        """Run the validators; ``object_id`` is None when the server will make one up."""
        for validator in self.service.validators:
            validator(self, kind, parent, data, object_id=object_id)

    def json_patch(self, body, existing, permission_names, principals):
        from .jsonpatch import apply_json_patch

        return apply_json_patch(body, existing, permission_names, principals)

    def base_url(self):
        return base_url(self.environ, self.settings)

    def to_deprecation_alert(self):
        return json.dumps(
            {
                "code": "soft-eol",
                "message": "_to is now deprecated, you should use _before instead",
                "url": "https://kinto.readthedocs.io/en/2.4.0/api/resource.html"
                "#list-of-available-url-parameters",
            },
            separators=(",", ":"),
        )


def base_url(environ, settings):
    scheme = settings.get("http_scheme") or environ.get("wsgi.url_scheme", "http")
    host = (
        settings.get("http_host")
        or environ.get("HTTP_HOST")
        or (f"{environ.get('SERVER_NAME', 'localhost')}:{environ.get('SERVER_PORT', '80')}")
    )
    return f"{scheme}://{host}"


# -- bottle app --------------------------------------------------------------


def create_app(service):
    """The WSGI application for ``service`` (plugins already set up)."""
    app = service.app
    app.install(_kinto_errors(service))
    state = lambda: RequestState(service, bottle.request.environ)  # noqa: E731

    def resource_route(path, kind, parent_names, plural):
        def view(**ids):
            current = state()
            parent = tuple((name, ids[name]) for name in parent_names)
            resource = ResourceView(current, KINDS[kind], parent)
            if plural:
                return resource.plural(current.method)
            return resource.object(current.method, ids[kind])

        app.route(path, "ANY", view)

    resource_route("/v1/buckets", "bucket", (), True)
    resource_route("/v1/buckets/<bucket>", "bucket", (), False)
    resource_route("/v1/buckets/<bucket>/groups", "group", ("bucket",), True)
    resource_route("/v1/buckets/<bucket>/groups/<group>", "group", ("bucket",), False)
    resource_route("/v1/buckets/<bucket>/collections", "collection", ("bucket",), True)
    resource_route(
        "/v1/buckets/<bucket>/collections/<collection>", "collection", ("bucket",), False
    )
    resource_route(
        "/v1/buckets/<bucket>/collections/<collection>/records",
        "record",
        ("bucket", "collection"),
        True,
    )
    resource_route(
        "/v1/buckets/<bucket>/collections/<collection>/records/<record>",
        "record",
        ("bucket", "collection"),
        False,
    )

    from . import utility

    utility.add_routes(service, state)
    from . import permissions

    permissions.add_routes(service)
    from .batch import add_batch_route

    add_batch_route(service)

    app.default_error_handler = _unrouted
    service.wsgi = EdgeMiddleware(app, service.settings, service.preflight_methods)
    return service.wsgi


def _unrouted(error):
    """Bottle's own 404/405 (no route matched) in Kinto's words."""
    if error.status_code == 405:
        response = errors.method_not_allowed(None)
    elif error.status_code == 404:
        response = errors.unknown_url()
    else:
        response = errors.internal_error()
    bottle.response.status = response.status_code
    bottle.response.content_type = "application/json"
    return response.body


def _kinto_errors(service):
    """A bottle plugin: storage trouble and bugs become Kinto JSON, never HTML."""
    retry_after = service.settings["retry_after_seconds"]

    def decorator(callback):
        def wrapper(*args, **kwargs):
            refused = refused_origin(bottle.request.environ, service.settings)
            if refused is not None:
                return refused
            try:
                return callback(*args, **kwargs)
            except bottle.HTTPResponse:
                raise
            except StorageFull:
                logger.error("disk refused a write", exc_info=True)
                return errors.insufficient_storage(retry_after)
            except StorageBusy:
                logger.warning("storage busy", exc_info=True)
                return errors.service_unavailable(retry_after)
            except Exception:
                logger.exception(
                    "unexpected error on %s %s", bottle.request.method, bottle.request.path
                )
                return errors.internal_error()

        return wrapper

    return decorator


def allowed_origin(origin, patterns):
    """The Access-Control-Allow-Origin value for ``origin``, or None."""
    if not origin:
        return None
    if "*" in patterns:
        return "*"
    return origin if any(fnmatchcase(origin, p) for p in patterns) else None


def refused_origin(environ, settings):
    """Kinto's 400 for a request from an origin ``cors_origins`` does not allow.

    Browsers send ``Origin`` on cross-site requests, so this stops another
    site's page from writing with a user's credentials (CSRF).
    """
    origin = environ.get("HTTP_ORIGIN")
    if not origin or allowed_origin(origin, settings["cors_origins"]):
        return None
    return errors.invalid_param("header", "Origin", f"{origin} not allowed")


# -- the edge ----------------------------------------------------------------


def undecodable_url(environ):
    """Kinto's 400 for a path, then a querystring, whose bytes are not UTF-8
    (WSGI gives both as latin-1 strings of the bytes); None when both decode."""
    try:
        environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8")
    except UnicodeError:
        return errors.http_error(400, errors.INVALID_PARAMETERS, message="Invalid URL path.")
    query = environ.get("QUERY_STRING", "")
    try:
        unquote_to_bytes(query.encode("latin-1")).decode("utf-8")
    except UnicodeError:
        # Kinto's words, its missing space included.
        message = (
            "A request with an incorrect encoding in the querystring wasreceived. "
            f"Please make sure your requests are encoded in UTF-8: {query}"
        )
        return errors.http_error(400, errors.INVALID_PARAMETERS, message=message)
    return None


_OTHER_VERSION = re.compile(r"^/v\d+(/|$)")
_OBJECT_PATH = re.compile(
    r"^/v1/(accounts/[^/]+|buckets/[^/]+((/groups|/collections)/[^/]+(/records/[^/]+)?)?)$"
)
_PLURAL_PATH = re.compile(
    r"^/v1/(accounts|buckets(/[^/]+/(groups|collections)(/[^/]+/records)?)?)$"
)


class EdgeMiddleware:
    """Kinto's behaviour before and around routing (protocol 3.1, 14, 20)."""

    def __init__(self, app, settings, preflight_methods=()):
        self.app = app
        self.settings = settings
        self.preflight_methods = preflight_methods

    def __call__(self, environ, start_response):
        def start_with_headers(status, headers, exc_info=None):
            return start_response(status, self._with_common_headers(environ, headers), exc_info)

        try:
            early = self._early_response(environ)
            if early is not None:
                return self._send(early, start_with_headers)
            return self.app(environ, start_with_headers)
        except Exception:
            # Last resort for a bug outside any view: Kinto JSON, never
            # cheroot's bare 500 or a traceback.
            logger.exception(
                "unexpected error on %s %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO")
            )
            error_info = sys.exc_info()
            return self._send(
                errors.internal_error(),
                lambda status, headers: start_with_headers(status, headers, error_info),
            )

    def _early_response(self, environ):
        undecodable = undecodable_url(environ)
        if undecodable is not None:
            return undecodable
        path = environ.get("PATH_INFO", "") or "/"
        method = environ["REQUEST_METHOD"].upper()
        if method == "OPTIONS":
            return self._preflight(environ, path)
        if self.settings["readonly"] and method not in ("GET", "HEAD"):
            return errors.method_not_allowed(None)
        if not (path == "/v1" or path.startswith("/v1/")):
            if _OTHER_VERSION.match(path):
                return errors.http_error(
                    404,
                    errors.VERSION_NOT_AVAILABLE,
                    message="The requested API version is not available on this server.",
                )
            if self.settings["version_prefix_redirect_enabled"]:
                return self._redirect(environ, "/v1" + path, cache=False)
            return errors.unknown_url()
        if self.settings["trailing_slash_redirect_enabled"]:
            if path == "/v1":
                return self._redirect(environ, "/v1/", cache=True)
            if path.endswith("/") and path != "/v1/" and not self._routed(path):
                return self._redirect(environ, path.rstrip("/"), cache=True)
        return None

    def _routed(self, path):
        """Is this path, slash included, a route's own (the admin plugin's
        ``/v1/admin/``)?  Kinto redirects only paths no route serves."""
        try:  # as a GET: a POST to such a path is its route's 405, not a redirect
            route, _ = self.app.router.match({"PATH_INFO": path, "REQUEST_METHOD": "GET"})
        except bottle.HTTPError:
            return False
        return route.rule.endswith("/")

    def _redirect(self, environ, path, cache):
        location = base_url(environ, self.settings) + quote(path)
        query = environ.get("QUERY_STRING")
        if query:
            location += "?" + query
        headers = {"Location": location, "Content-Type": "text/plain"}
        if cache:
            headers["Cache-Control"] = "max-age=3600"
            headers["Expires"] = formatdate(time.time() + 3600, usegmt=True)
        return bottle.HTTPResponse(f"307 Temporary Redirect: {location}", 307, headers)

    def _preflight(self, environ, path):
        missing = [
            name
            for name, key in (
                ("Origin", "HTTP_ORIGIN"),
                ("Access-Control-Request-Method", "HTTP_ACCESS_CONTROL_REQUEST_METHOD"),
            )
            if not environ.get(key)
        ]
        if missing:
            return errors.invalid(
                [
                    {"location": "header", "name": name, "description": "this header is mandatory"}
                    for name in missing
                ]
            )
        refused = refused_origin(environ, self.settings)
        if refused is not None:
            return refused
        methods = self.allowed_methods(path)
        if environ["HTTP_ACCESS_CONTROL_REQUEST_METHOD"].upper() not in methods.split(","):
            return errors.invalid_param(
                "header", "Access-Control-Request-Method", "Method not allowed"
            )
        requested = environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS", "")
        allow_headers = list(EXPOSED_HEADERS) + [
            h.strip() for h in requested.split(",") if h.strip()
        ]
        return bottle.HTTPResponse(
            "null",
            200,
            {
                "Content-Type": "application/json",
                "Access-Control-Allow-Methods": methods,
                "Access-Control-Allow-Headers": ", ".join(dict.fromkeys(allow_headers)),
                "Access-Control-Max-Age": str(self.settings["cors_max_age_seconds"]),
            },
        )

    def allowed_methods(self, path):
        """The methods a preflight of ``path`` announces ("GET,HEAD,OPTIONS");
        also those the OpenAPI document gives a route served for "ANY"."""
        from_plugins = [
            allowed for pattern, allowed in self.preflight_methods if pattern.match(path)
        ]
        if from_plugins:
            methods = from_plugins[0]
        elif _PLURAL_PATH.match(path):
            methods = PLURAL_METHODS
        elif _OBJECT_PATH.match(path):
            methods = OBJECT_METHODS
        else:
            methods = "GET,HEAD,POST,OPTIONS"
        if self.settings["readonly"]:
            methods = ",".join(m for m in methods.split(",") if m in ("GET", "HEAD", "OPTIONS"))
        return methods

    def _with_common_headers(self, environ, headers):
        # Bottle title-cases names ("Etag"); send them as Kinto spells them,
        # since batch sub-responses expose names as JSON keys.
        result, names = [], set()
        for name, value in headers:
            lower = name.lower()
            names.add(lower)
            result.append((CANONICAL_NAMES.get(lower, name), value))
        result += [header for lower, header in _SECURITY_BY_NAME if lower not in names]
        result.append(_EXPOSE_ALL if environ.get(EXPOSE_ALL_HEADERS) else _EXPOSE_BASE)
        origin = environ.get("HTTP_ORIGIN")
        if origin:
            origin = self._allowed_origin(origin)
            if origin:
                result.append(("Access-Control-Allow-Origin", origin))
        return result

    def _allowed_origin(self, origin):
        return allowed_origin(origin, self.settings["cors_origins"])

    @staticmethod
    def _send(response, start_response):
        body = response.body if isinstance(response.body, (bytes, str)) else ""
        if isinstance(body, str):
            body = body.encode("utf-8")
        headers = [(k, v) for k, v in response.headerlist if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        start_response(response.status_line, headers)
        return [body]
