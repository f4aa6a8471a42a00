"""The openid plugin: OpenID Connect login and bearer tokens, as Kinto's
``kinto.plugins.openid``.

Each ``[[openid_providers]]`` table named in ``auth_policies`` becomes an auth
policy of that name (Kinto's ``multiauth.policy.<name>.*``):

* ``Authorization: Bearer <access token>`` is checked at the provider's
  userinfo endpoint; the user id is ``<name>:<userid_field of the answer>``.
  A verified token is remembered ``verification_ttl_seconds`` (renewed by
  each use), so a client sending it with every request costs the provider
  one call a period.  An unknown or expired token leaves the request
  anonymous (a 401 where authentication is needed), as in Kinto.
* ``GET /v1/openid/<name>/login?callback=&scope=`` redirects to the
  provider's authorization endpoint with a fresh ``state``;
  ``GET /v1/openid/<name>/token?code=&state=`` (where the provider sends the
  browser back) trades the code at the token endpoint and redirects to the
  callback with the provider's answer appended, base64-encoded.

The provider's discovery document is fetched on first need and kept.  Every
call to the provider has a timeout; a provider that cannot be reached (or
answers nonsense) gives a 503, never a 500.  Unlike Kinto, a state is
remembered by the provider that issued it (Kinto shares one cache), and
access tokens are not decoded as JWTs (no ``audience`` setting).
"""

import base64
import fnmatch
import hashlib
import json
import logging
import re
import secrets
import string
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from bottle import HTTPResponse

from ..config import ConfigError
from ..web import errors

logger = logging.getLogger("kintofs")

# Kinto's defaults (kinto/plugins/openid).
PROVIDER_DEFAULTS: dict[str, Any] = {
    "client_secret": "",
    "header_type": "Bearer",
    "userid_field": "sub",
    "verification_ttl_seconds": 86400,
    "state_ttl_seconds": 3600,
    "state_length": 32,
    "allowed_scopes": ["openid", "email", "profile"],
    "trusted_callback_urls": [],
}
# Callbacks trusted when none are configured: command-line clients on this
# machine (kinto-http's browser login); Kinto Admin's page is added when served.
LOCAL_CALLBACK_URLS = ("http://localhost:*/*", "http://127.0.0.1:*/*")
RESERVED_NAMES = ("basicauth", "account")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")

PROVIDER_TIMEOUT_SECONDS = 10
# Bounds on what is kept in memory per provider, so that a flood of logins or
# of random tokens cannot grow it.
MAX_VERIFIED_TOKENS = 10000
MAX_PENDING_STATES = 10000
# Where the hello view finds the verified userinfo of this request.
PROFILE_KEY = "kintofs.openid.profile"


class ProviderUnavailable(Exception):
    """The provider could not be reached or gave an unusable answer."""


# -- talking to the provider ---------------------------------------------------


def call_provider(url, *, headers=None, form=None):
    """``(status, body bytes)`` of a GET (or a form POST) to ``url``."""
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    request = urllib.request.Request(url, data=data, headers={"Accept": "application/json"})
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=PROVIDER_TIMEOUT_SECONDS) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()
    except (OSError, ValueError) as error:  # refused, timed out, bad URL, bad headers
        raise ProviderUnavailable(f"{url}: {error}") from None


def json_object(body):
    """``body`` as a JSON object, or None."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class Discovery:
    """The provider's ``.well-known/openid-configuration``, fetched once it is needed.

    A failed fetch is not remembered: the next request tries again.
    """

    REQUIRED = ("issuer", "authorization_endpoint", "token_endpoint", "userinfo_endpoint")

    def __init__(self, issuer):
        self.url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        self._document = None
        self._guard = threading.Lock()

    def get(self):
        with self._guard:
            if self._document is None:
                status, body = call_provider(self.url)
                document = json_object(body)
                if status != 200 or document is None:
                    raise ProviderUnavailable(f"{self.url} answered {status}")
                missing = [key for key in self.REQUIRED if not isinstance(document.get(key), str)]
                if missing:
                    raise ProviderUnavailable(f"{self.url} has no {', '.join(missing)}")
                self._document = document
            return self._document


class ExpiringEntries:
    """A bounded map whose entries expire: the oldest go first when it is full."""

    def __init__(self, max_entries, clock=time.monotonic):
        self.max_entries = max_entries
        self.clock = clock
        self._entries = {}  # key -> (value, expires at), oldest first
        self._guard = threading.Lock()

    def put(self, key, value, ttl):
        now = self.clock()
        with self._guard:
            self._entries.pop(key, None)
            if len(self._entries) >= self.max_entries:
                self._entries = {k: e for k, e in self._entries.items() if e[1] > now}
                while len(self._entries) >= self.max_entries:
                    del self._entries[next(iter(self._entries))]
            self._entries[key] = (value, now + ttl)

    def get(self, key):
        with self._guard:
            entry = self._entries.get(key)
        return entry[0] if entry is not None and entry[1] > self.clock() else None

    def pop(self, key):
        with self._guard:
            entry = self._entries.pop(key, None)
        return entry[0] if entry is not None and entry[1] > self.clock() else None


# -- callback URLs (Kinto's trusted_callback_urls) -------------------------------

DEFAULT_PORTS = {"http": "80", "https": "443"}
HOST_CHARS = set(string.ascii_lowercase + string.digits + ".-*")
IPV6_CHARS = set(string.hexdigits.lower() + ":.")
PORT_CHARS = set(string.digits + "*")


def url_parts(url):
    """``(scheme, host, port, rest)`` of an http(s) URL, lower-cased host and
    explicit port, for comparing with trusted patterns; ValueError for what a
    browser could read otherwise (spaces, user names, odd host characters,
    ``..`` segments: ``urlsplit`` is more lenient than browsers)."""
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError("spaces or control characters")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or "@" in parts.netloc:
        raise ValueError("not http(s), or with a user name")
    host = parts.hostname or ""
    allowed = IPV6_CHARS if parts.netloc.startswith("[") else HOST_CHARS
    if not host or not set(host) <= allowed:
        raise ValueError("empty host or unexpected characters in it")
    port = parts.netloc.rsplit("]", 1)[-1].partition(":")[2]
    if not set(port) <= PORT_CHARS:
        raise ValueError("bad port")
    path = parts.path.lower().replace("%2e", ".").replace("\\", "/")
    if any(segment in (".", "..") for segment in path.split("/")):
        raise ValueError("dot segments in the path")
    rest = url[len(parts.scheme) + 3 + len(parts.netloc) :] or "/"
    return parts.scheme, host, port or DEFAULT_PORTS[parts.scheme], rest


def wildcard_match(value, pattern):
    """``*`` matches anything; every other character, ``?`` and ``[`` included, is itself."""
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]").replace("?", "[?]"))


def is_trusted_callback(callback, patterns):
    try:
        scheme, *others = url_parts(callback)
    except ValueError:
        return False
    for pattern in patterns:
        try:
            pattern_scheme, *pattern_others = url_parts(pattern)
        except ValueError:
            continue
        if scheme == pattern_scheme and all(map(wildcard_match, others, pattern_others)):
            return True
    return False


# Kinto checks the callback with colander's URL validator: a scheme, "://", something.
URL_RE = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$", re.IGNORECASE)
MAX_URL_LENGTH = 2048


# -- the policy ---------------------------------------------------------------------


class OpenIDPolicy:
    """One provider: the auth policy of its bearer tokens, and its login state."""

    def __init__(self, table, retry_after):
        self.retry_after = retry_after
        self.options = {
            key: PROVIDER_DEFAULTS[key] if table.get(key) is None else table[key]
            for key in PROVIDER_DEFAULTS
        }
        self.name = table["name"]
        self.issuer = table["issuer"]
        self.client_id = table["client_id"]
        self.header_type = self.options["header_type"]
        self.challenge = f'{self.header_type} realm="Realm"'  # Kinto's forget()
        self.discovery = Discovery(self.issuer)
        self.states = ExpiringEntries(MAX_PENDING_STATES)
        self.verified = ExpiringEntries(MAX_VERIFIED_TOKENS)
        self._key = secrets.token_bytes(32)  # tokens are remembered by a keyed hash only

    def unavailable(self, problem):
        """The 503 to answer when the provider fails (the log says how)."""
        logger.warning("openid provider %s: %s", self.name, problem)
        message = f"The OpenID provider {self.name!r} is unavailable, please retry later."
        return errors.service_unavailable(self.retry_after, message)

    def discovered(self, name):
        """``name`` of the provider's discovery document, or a 503 if it cannot be read."""
        try:
            return self.discovery.get()[name]
        except ProviderUnavailable as problem:
            raise self.unavailable(problem) from None

    def identify_request(self, environ):
        """The user id of the request's bearer token, or None."""
        method, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if not token or method.lower() != self.header_type.lower():
            return None
        if not token.isascii() or not token.isprintable():
            return None  # not something the provider could have issued
        digest = hashlib.blake2b(token.encode(), key=self._key).digest()
        profile = self.verified.get(digest)
        if profile is None:
            profile = self.fetch_userinfo(token)
            if profile is None:
                return None
        self.verified.put(digest, profile, self.options["verification_ttl_seconds"])
        userid = profile.get(self.options["userid_field"])
        if isinstance(userid, bool) or not isinstance(userid, (str, int)) or userid == "":
            return None  # the provider does not tell this field of its users
        environ[PROFILE_KEY] = profile
        return f"{self.name}:{userid}"

    def fetch_userinfo(self, token):
        """The provider's userinfo answer for ``token``, or None if it refuses it."""
        url = self.discovered("userinfo_endpoint")
        try:
            status, body = call_provider(url, headers={"Authorization": "Bearer " + token})
        except ProviderUnavailable as problem:
            raise self.unavailable(problem) from None
        if 400 <= status < 500:
            return None  # invalid, expired or revoked
        profile = json_object(body)
        if status != 200 or profile is None:
            raise self.unavailable(f"userinfo answered {status}")
        return profile


# -- the views -------------------------------------------------------------------


def last_values(state):
    return dict(state.query_params)  # Kinto (WebOb) reads the last of repeated names


def required(params, names):
    """Kinto's 400 details for each of ``names`` missing or empty."""
    return [
        {"location": "querystring", "name": name, "description": "Required"}
        for name in names
        if not params.get(name)
    ]


def unknown_provider(providers, name):
    if name in providers:
        return []
    return [{"location": "path", "name": "provider", "description": f"Unknown provider {name!r}"}]


def token_url(state, provider):
    return f"{state.base_url()}/v1/openid/{provider.name}/token"


def redirect(location):
    return HTTPResponse(f"307 Temporary Redirect: {location}", 307, {"Location": location})


def login_view(providers):
    def login(state, provider):
        params = last_values(state)
        params["callback"] = params.get("callback", "").strip()  # colander's URL strips
        problems = required(params, ("callback", "scope")) + unknown_provider(providers, provider)
        callback = params["callback"]
        if callback and not URL_RE.match(callback):
            problems.append(
                {"location": "querystring", "name": "callback", "description": "Must be a URL"}
            )
        elif len(callback) > MAX_URL_LENGTH:
            problems.append(
                {
                    "location": "querystring",
                    "name": "callback",
                    "description": f"Longer than maximum length {MAX_URL_LENGTH}",
                }
            )
        prompt = params.get("prompt")
        if prompt is not None and not prompt.startswith("none"):  # colander's Regex("none")
            problems.append(
                {
                    "location": "querystring",
                    "name": "prompt",
                    "description": "String does not match expected pattern",
                }
            )
        if problems:
            raise errors.invalid(problems)
        policy = providers[provider]
        options = policy.options
        scopes = params["scope"].split()
        unknown_scopes = sorted(set(scopes) - set(options["allowed_scopes"]))
        if unknown_scopes:
            raise errors.invalid_param(
                "body", "scope", f"Scopes not allowed: {', '.join(unknown_scopes)}"
            )
        trusted = options["trusted_callback_urls"] or [
            *LOCAL_CALLBACK_URLS,
            *([f"{state.base_url()}/v1/admin/*"] if "admin" in state.settings["plugins"] else []),
        ]
        if not is_trusted_callback(callback, trusted):
            raise errors.invalid_param("body", "callback", "Untrusted callback URL")
        if options["userid_field"] == "email" and "email" not in scopes:
            raise errors.invalid_param(
                "body", "scope", f"Provider {provider} requires 'email' scope"
            )
        authorization_endpoint = policy.discovered("authorization_endpoint")
        nonce = secrets.token_hex(options["state_length"])
        policy.states.put(nonce, callback, options["state_ttl_seconds"])
        query = {
            "client_id": policy.client_id,
            "response_type": "code",
            "scope": params["scope"],
            "redirect_uri": token_url(state, policy),
            "state": nonce,
        }
        if prompt:
            query["prompt"] = prompt
        separator = "&" if "?" in authorization_endpoint else "?"
        return redirect(authorization_endpoint + separator + urllib.parse.urlencode(query))

    return login


def token_view(providers):
    def token(state, provider):
        params = last_values(state)
        problems = required(params, ("state",)) + unknown_provider(providers, provider)
        if not problems and bool(params.get("code")) == bool(params.get("error")):
            description = (
                "Provide either 'state' and 'code', or 'error' and 'error_description', "
                "but not both."
            )
            problems.append({"location": "querystring", "name": "", "description": description})
        if problems:
            raise errors.invalid(problems)
        policy = providers[provider]
        token_endpoint = None if params.get("error") else policy.discovered("token_endpoint")
        callback = policy.states.pop(params["state"])  # a state serves once
        if callback is None:
            raise errors.invalid(
                [
                    {
                        "location": "body",
                        "name": "state",
                        "description": "Invalid state",
                        "errno": 105,  # Kinto's INVALID_AUTH_TOKEN
                    }
                ]
            )
        if token_endpoint is None:
            # The provider refused (the user declined...): tell the client, trade nothing.
            answer = {"error": params["error"]}
            if params.get("error_description"):
                answer["error_description"] = params["error_description"]
            return redirect(callback + urllib.parse.urlencode(answer))
        form = {
            "code": params["code"],
            "client_id": policy.client_id,
            "client_secret": policy.options["client_secret"],
            "redirect_uri": token_url(state, policy),
            "grant_type": "authorization_code",
        }
        try:
            _status, tokens = call_provider(token_endpoint, form=form)
        except ProviderUnavailable as problem:
            raise policy.unavailable(problem) from None
        # The provider's answer, refusals included, is the client's to read (as Kinto).
        encoded = base64.b64encode(tokens).decode("ascii")
        return redirect(callback + urllib.parse.quote(encoded))

    return token


# -- setup -------------------------------------------------------------------------


def check_settings(settings):
    """Refuse provider tables kintofs could not serve; warn about unused ones."""

    def fail(index, problem):
        return ConfigError(f"openid_providers[{index}]: {problem}", key="openid_providers")

    seen = set()
    for index, table in enumerate(settings["openid_providers"]):
        name = table["name"]
        if not NAME_RE.match(name):
            raise fail(index, f"name must be lower-case letters, digits, - or _, got {name!r}")
        if name in RESERVED_NAMES:
            raise fail(index, f"name {name!r} is the name of another auth policy")
        if name in seen:
            raise fail(index, f"another provider is already named {name!r}")
        seen.add(name)
        issuer = urllib.parse.urlsplit(table["issuer"])
        if issuer.scheme not in ("http", "https") or not issuer.hostname:
            raise fail(index, f"issuer must be an http:// or https:// URL, got {table['issuer']!r}")
        if not table["client_id"]:
            raise fail(index, "client_id must not be empty")
        header_type = table.get("header_type")
        if header_type is not None and not re.match(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$", header_type):
            raise fail(index, f"header_type must be one word, such as Bearer, got {header_type!r}")
        for key, low in (
            ("verification_ttl_seconds", 0),
            ("state_ttl_seconds", 1),
            ("state_length", 16),
        ):
            if table.get(key) is not None and table[key] < low:
                raise fail(index, f"{key} must be >= {low}, got {table[key]}")
        for pattern in table.get("trusted_callback_urls") or []:
            try:
                url_parts(pattern)
            except ValueError as problem:
                raise fail(index, f"trusted_callback_urls: {pattern!r}: {problem}") from None
        if name not in settings["auth_policies"]:
            logger.warning(
                "openid provider %r is not in auth_policies: its tokens are not accepted", name
            )


def setup(service):
    settings = service.settings
    check_settings(settings)
    providers = {
        table["name"]: OpenIDPolicy(table, settings["retry_after_seconds"])
        for table in settings["openid_providers"]
        if table["name"] in settings["auth_policies"]
    }
    for name, policy in providers.items():
        service.add_auth_policy(name, policy)

    def describe(name, policy):
        try:
            document = policy.discovery.get()
        except ProviderUnavailable as problem:
            # The hello view still answers: what the settings tell, and the log says why.
            logger.warning("openid provider %s: %s", name, problem)
            document = {"issuer": policy.issuer, "userinfo_endpoint": None}
        return {
            "name": name,
            "issuer": document["issuer"],
            "auth_path": f"/openid/{name}/login",
            "client_id": policy.client_id,
            "audience": "",
            "header_type": policy.header_type,
            "userinfo_endpoint": document["userinfo_endpoint"],
        }

    def capability(state):
        return {
            "description": "OpenID connect support.",
            "url": "http://kinto.readthedocs.io/en/stable/api/1.x/authentication.html",
            "providers": [describe(name, policy) for name, policy in providers.items()],
        }

    if providers:  # as Kinto: no capability without a provider in use
        service.add_capability("openid", capability)

    def add_profile(state, user):
        # Kinto's hello view: the userinfo of the token, {} for other users.
        user["profile"] = state.environ.get(PROFILE_KEY, {})

    service.add_user_info(add_profile)
    for path, view in (("login", login_view(providers)), ("token", token_view(providers))):
        service.add_route(
            f"/v1/openid/<provider>/{path}", ["GET"], view, preflight="GET,HEAD,OPTIONS"
        )
