"""Settings loading for kintofs.

Every setting has a default in :data:`DEFAULTS`. A value is taken, from the
lowest to the highest precedence, from:

1. :data:`DEFAULTS`;
2. the TOML file (``kintofs.toml``; top-level keys only);
3. environment variables ``KINTOFS_<NAME upper>`` (for containers);
4. ``overrides``: the command-line flags (a key whose value is ``None`` is
   ignored, so unset flags do not mask the file).

Names are Kinto's setting names without the ``kinto.`` prefix, so a Kinto
``.ini`` maps one to one (see docs/configuration.md). The type of a setting is
the type of its default; a value of another type is an error rather than a
guess, and so is an unknown key: a typo must not pass silently.

The one exception to "every key has a default" is Kinto's family of global
permission settings, ``<type>_<perm>_principals`` (see
:data:`GENERIC_PRINCIPALS_RE`): any of them may be set, and only those with an
entry in :data:`DEFAULTS` are present when unset.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from typing import Any

__all__ = [
    "DEFAULTS",
    "ENV_PREFIX",
    "GENERIC_PRINCIPALS_RE",
    "KNOWN_AUTH_POLICIES",
    "KNOWN_PLUGINS",
    "ConfigError",
    "Settings",
    "load_settings",
]

DEFAULT_CONFIG_FILE = "kintofs.toml"
ENV_PREFIX = "KINTOFS_"

KNOWN_PLUGINS = frozenset(
    {"flush", "default_bucket", "accounts", "history", "attachment", "changes", "admin", "openid"}
)
KNOWN_AUTH_POLICIES = frozenset({"basicauth", "account"})
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
HTTP_SCHEMES = ("", "http", "https")

# Kinto's global grants per resource type, e.g. ``collection_read_principals``.
GENERIC_PRINCIPALS_RE = re.compile(
    r"^(bucket|group|collection|record|account)_(read|write|create)_principals$"
)

# ---------------------------------------------------------------------------
# Defaults. Keep docs/configuration.md and the sample kintofs.toml in step:
# tests/test_config.py fails when a key here is missing from either.
# ---------------------------------------------------------------------------

DEFAULTS: dict[str, Any] = {
    # Server
    "bind": "127.0.0.1",
    "port": 8888,
    "data_dir": "./data",
    "threads": 10,
    "request_header_timeout_seconds": 10,
    "request_body_timeout_seconds": 20,
    "request_body_min_rate_bytes": 500,
    "fsync": True,
    "watch_files": True,
    # Limits and pagination
    "paginate_by": 0,
    "storage_max_fetch_size": 10000,
    "index_memory_mb": 128,
    "index_max_lists": 0,  # deprecated: index_memory_mb bounds the index
    "batch_max_requests": 25,
    "max_request_body_bytes": 4194304,
    "max_json_depth": 64,
    # Authentication and permissions.
    # None means "not set anywhere": the server then generates a secret once
    # and keeps it in the data directory. An explicit "" is kept as "".
    "userid_hmac_secret": None,
    "bucket_create_principals": ["system.Authenticated"],
    "account_create_principals": [],
    "account_write_principals": [],
    "account_read_principals": [],
    "account_cache_ttl_seconds": 30,
    "login_rate_limit": 10,
    "login_rate_window_seconds": 300,
    "auth_policies": ["basicauth"],
    # Features
    "plugins": [],
    "experimental_permissions_endpoint": False,
    "permissions_read_principals": ["system.Everyone"],
    "default_bucket_hmac_secret": "",
    "experimental_collection_schema_validation": False,
    "readonly": False,
    # Admin plugin: the folder of a Kinto Admin build (index.html, VERSION)
    "admin_assets_path": "",
    # History plugin (Kinto's history.* settings)
    "history_exclude_resources": [],
    "history_exclude_user_ids": [],
    "history_auto_trim_max_count": -1,
    "history_auto_trim_threshold": 100,
    "history_auto_trim_user_ids": [],
    # Attachment plugin (Kinto's attachment.* settings)
    "attachment_base_url": "",
    # Kinto's expression of groups and extensions ("default", "images+pdf"),
    # the entries joined with "+"; plugins/attachment.py has the groups.
    "attachment_extensions": ["default"],
    # Kinto's ".ext:type;.ext:type" overrides of the uploaded file's type.
    "attachment_mimetypes": "",
    "attachment_max_size_bytes": 10485760,
    "attachment_keep_old_files": False,
    # Changes plugin (Kinto's changes.* settings)
    "changes_resources": [],
    # HTTP behaviour
    "cors_origins": ["*"],
    "cors_max_age_seconds": 3600,
    "retry_after_seconds": 3,
    "http_scheme": "",
    "http_host": "",
    "project_name": "kintofs",
    "project_docs": "https://kinto.readthedocs.io/",
    "trailing_slash_redirect_enabled": True,
    "version_prefix_redirect_enabled": True,
    # Logging
    "log_level": "info",
    "access_log": "-",
    # Telling others about changes (kintofs/push/webhooks.py, push/command.py)
    "webhooks": [],
    # OpenID Connect providers (Kinto's multiauth.policy.<name>.*; plugins/openid.py)
    "openid_providers": [],
    "change_command": "",
    "change_command_delay_seconds": 2,
    "push_heartbeat_seconds": 20,
}

# Types of settings whose default does not tell (None defaults).
_EXPLICIT_TYPES: dict[str, type] = {"userid_hmac_secret": str}

# Settings that are lists of tables (``[[webhooks]]`` in kintofs.toml, a JSON
# array of objects in the environment): key -> {field: required}.  Every field
# is a string unless TABLE_FIELD_TYPES says otherwise; an optional one left out
# is None in the loaded settings.
TABLE_LISTS: dict[str, dict[str, bool]] = {
    "webhooks": {"url": True, "secret": True, "bucket": False, "collection": False},
    "openid_providers": {
        "name": True,
        "issuer": True,
        "client_id": True,
        "client_secret": False,
        "header_type": False,
        "userid_field": False,
        "verification_ttl_seconds": False,
        "state_ttl_seconds": False,
        "state_length": False,
        "allowed_scopes": False,
        "trusted_callback_urls": False,
    },
}
# Fields of those tables that are not strings: (key, field) -> int or list (of strings).
TABLE_FIELD_TYPES: dict[tuple[str, str], type] = {
    ("openid_providers", "verification_ttl_seconds"): int,
    ("openid_providers", "state_ttl_seconds"): int,
    ("openid_providers", "state_length"): int,
    ("openid_providers", "allowed_scopes"): list,
    ("openid_providers", "trusted_callback_urls"): list,
}


class ConfigError(Exception):
    """A bad config file, a bad value or an unknown key.

    The message is one line that names the key (when there is one) and where
    the value came from. ``key`` and ``source`` are also attributes.
    """

    def __init__(self, message: str, key: str | None = None, source: str | None = None):
        super().__init__(message)
        self.key = key
        self.source = source


class Settings(dict):
    """The loaded settings: a plain dict, with attribute access for reading.

    ``config_path`` is the absolute path of the TOML file that was read, or
    None when no file was read.
    """

    config_path: str | None = None

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


# ---------------------------------------------------------------------------
# Type coercion
# ---------------------------------------------------------------------------

_TRUE_WORDS = {"true", "1", "yes", "on"}
_FALSE_WORDS = {"false", "0", "no", "off"}


def _expected_type(key: str) -> type:
    if key in _EXPLICIT_TYPES:
        return _EXPLICIT_TYPES[key]
    if key in DEFAULTS:
        return type(DEFAULTS[key])
    # Generic <type>_<perm>_principals settings are lists of principals.
    return list


def _type_name(kind: type) -> str:
    return {int: "an integer", bool: "a boolean", str: "a string", list: "an array of strings"}[
        kind
    ]


def _fail(key: str, source: str, problem: str) -> ConfigError:
    return ConfigError(f"{key} (from {source}): {problem}", key=key, source=source)


def _is_known_key(key: str) -> bool:
    return key in DEFAULTS or GENERIC_PRINCIPALS_RE.match(key) is not None


def _has_type(value: Any, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is list:
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    return isinstance(value, kind)


def _check_tables(key: str, value: Any, source: str) -> list[dict[str, str | None]]:
    """A list of tables (see TABLE_LISTS), each with every field (None if left out)."""
    fields = TABLE_LISTS[key]
    if not isinstance(value, list):
        got = type(value).__name__  # never echoed: a table holds a secret
        raise _fail(
            key, source, f"expected an array of tables ([[{key}]], two brackets), got {got}"
        )
    tables = []
    for index, table in enumerate(value):
        where = f"{key}[{index}]"
        if not isinstance(table, dict):
            raise _fail(key, source, f"{where}: expected a table, got {type(table).__name__}")
        unknown = sorted(set(table) - set(fields))
        if unknown:
            hint = ""
            if not source.startswith("environment variable") and source != "command line":
                hint = (
                    f"; every key after a [[{key}]] line belongs to that table: "
                    f"put the [[{key}]] tables at the end of the file"
                )
            known = ", ".join(sorted(fields))
            raise _fail(
                key, source, f"{where}: unknown field {unknown[0]!r} (known: {known}{hint})"
            )
        for name, required in fields.items():
            if required and name not in table:
                raise _fail(key, source, f"{where}: {name} is missing")
            kind = TABLE_FIELD_TYPES.get((key, name), str)
            if name in table and not _has_type(table[name], kind):
                # The value is not echoed: it may be a secret.
                got = type(table[name]).__name__
                raise _fail(key, source, f"{where}: {name}: expected {_type_name(kind)}, got {got}")
        tables.append({name: table.get(name) for name in fields})
    return tables


def _check_native(key: str, value: Any, source: str) -> Any:
    """Check a value that already has a Python type (TOML, overrides)."""
    if key in TABLE_LISTS:
        return _check_tables(key, value, source)
    kind = _expected_type(key)
    ok = _has_type(value, kind)
    if ok and kind is list:
        value = list(value)
    if not ok:
        hint = ""
        if kind is list and isinstance(value, str):
            hint = f", e.g. {key} = {json.dumps(value.split())}"
        raise _fail(key, source, f"expected {_type_name(kind)}, got {value!r}{hint}")
    return value


def _parse_text(key: str, text: str, source: str) -> Any:
    """Turn the text of an environment variable (or a string flag) into a value."""
    if key in TABLE_LISTS:
        if not text.strip():
            return []
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise _fail(key, source, f"expected a JSON array of objects: {exc}") from None
        return _check_native(key, value, source)
    kind = _expected_type(key)
    if kind is str:
        return text
    if kind is bool:
        word = text.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        raise _fail(key, source, f"expected true/false/1/0/yes/no/on/off, got {text!r}")
    if kind is int:
        try:
            return int(text.strip(), 10)
        except ValueError:
            raise _fail(key, source, f"expected an integer, got {text!r}") from None
    # list of str: a JSON array, or words separated by whitespace and/or commas
    # (Kinto's .ini lists are whitespace separated).
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except ValueError as exc:
            raise _fail(key, source, f"invalid JSON array: {exc}") from None
        return _check_native(key, value, source)
    return [word for word in re.split(r"[\s,]+", stripped) if word]


# ---------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fp:
            return tomllib.load(fp)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}", source=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}", source=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}", source=path) from None


def _from_file(path: str) -> dict[str, tuple[Any, str]]:
    found = {}
    for key, value in _read_toml(path).items():
        if not _is_known_key(key):
            if isinstance(value, dict):
                problem = (
                    "unknown setting (kintofs.toml has no [sections]: write keys at the top level)"
                )
            else:
                problem = "unknown setting (see docs/configuration.md)"
            raise _fail(key, path, problem)
        found[key] = (_check_native(key, value, path), path)
    return found


def _from_environ(environ: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    found = {}
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        source = f"environment variable {name}"
        if not _is_known_key(key):
            raise _fail(key, source, "unknown setting (see docs/configuration.md)")
        found[key] = (_parse_text(key, text, source), source)
    return found


def _from_overrides(overrides: Mapping[str, Any]) -> dict[str, tuple[Any, str]]:
    found = {}
    for key, value in overrides.items():
        if value is None:
            continue
        source = "command line"
        if not _is_known_key(key):
            raise _fail(key, source, "unknown setting")
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if isinstance(value, str) and _expected_type(key) is not str:
            value = _parse_text(key, value, source)
        found[key] = (_check_native(key, value, source), source)
    return found


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------

# key -> (minimum, maximum or None)
_INT_RANGES: dict[str, tuple[int, int | None]] = {
    "port": (1, 65535),
    "threads": (1, None),
    "request_header_timeout_seconds": (1, None),
    "request_body_timeout_seconds": (1, None),
    "request_body_min_rate_bytes": (0, None),
    "paginate_by": (0, None),
    "storage_max_fetch_size": (1, None),
    "index_memory_mb": (0, None),
    "index_max_lists": (0, None),
    "batch_max_requests": (1, None),
    "max_request_body_bytes": (1, None),
    "max_json_depth": (1, None),
    "cors_max_age_seconds": (0, None),
    "retry_after_seconds": (0, None),
    "account_cache_ttl_seconds": (0, None),
    "login_rate_limit": (0, None),
    "login_rate_window_seconds": (1, None),
    "history_auto_trim_threshold": (0, None),
    "attachment_max_size_bytes": (0, None),
    "change_command_delay_seconds": (0, None),
    "push_heartbeat_seconds": (1, 3600),
}


def _validate(settings: Settings, sources: dict[str, str]) -> None:
    def fail(key: str, problem: str) -> ConfigError:
        return _fail(key, sources.get(key, "defaults"), problem)

    for key, (low, high) in _INT_RANGES.items():
        value = settings[key]
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f">= {low}"
            raise fail(key, f"must be {bounds}, got {value}")

    if not settings["bind"].strip():
        raise fail("bind", "must not be empty")
    if not settings["data_dir"].strip():
        raise fail("data_dir", "must not be empty")

    providers = {table["name"] for table in settings["openid_providers"]}
    if providers and "openid" not in settings["plugins"]:
        raise fail("openid_providers", 'needs the "openid" plugin: add it to plugins')
    policies = KNOWN_AUTH_POLICIES | providers
    for key, known in (("plugins", KNOWN_PLUGINS), ("auth_policies", policies)):
        unknown = [name for name in settings[key] if name not in known]
        if unknown:
            raise fail(key, f"unknown {unknown[0]!r} (known: {', '.join(sorted(known))})")
        # Duplicates carry no meaning; keep the first occurrence and the order.
        settings[key] = list(dict.fromkeys(settings[key]))

    for key, value in settings.items():
        if (
            key not in TABLE_LISTS
            and _expected_type(key) is list
            and any(not item.strip() for item in value)
        ):
            raise fail(key, "entries must not be empty strings")

    level = settings["log_level"].lower()
    if level not in LOG_LEVELS:
        raise fail(
            "log_level", f"must be one of {', '.join(LOG_LEVELS)}, got {settings['log_level']!r}"
        )
    settings["log_level"] = level

    if settings["http_scheme"] not in HTTP_SCHEMES:
        raise fail("http_scheme", f'must be "", "http" or "https", got {settings["http_scheme"]!r}')

    _validate_webhooks(settings["webhooks"], lambda problem: fail("webhooks", problem))


def _validate_webhooks(hooks: list[dict[str, Any]], fail: Any) -> None:
    """Each hook: an http(s) URL, a secret, valid ids; no two alike."""
    from urllib.parse import urlsplit

    from .kinds import KINDS

    seen: dict[tuple[Any, ...], int] = {}
    for index, hook in enumerate(hooks):
        where = f"webhooks[{index}]"
        url = hook["url"]
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (a bad port raises ValueError)
        except ValueError as exc:
            raise fail(f"{where}: url: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or url != url.strip():
            raise fail(f"{where}: url must be an http:// or https:// URL, got {url!r}")
        if not hook["secret"]:
            raise fail(f"{where}: secret must not be empty (it signs every request)")
        for kind in ("bucket", "collection"):
            if hook[kind] is not None and not KINDS[kind].valid_id(hook[kind]):
                raise fail(f"{where}: {kind}: not a valid {kind} id: {hook[kind]!r}")
        if hook["collection"] is not None and hook["bucket"] is None:
            raise fail(f"{where}: a collection filter needs its bucket")
        same = (url, hook["bucket"], hook["collection"])
        if same in seen:
            raise fail(f"{where}: same url, bucket and collection as webhooks[{seen[same]}]")
        seen[same] = index


# ---------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------


def load_settings(
    config_path: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Load settings: DEFAULTS < TOML file < KINTOFS_* environment < overrides.

    ``config_path=None`` reads ``./kintofs.toml`` when it exists, else no
    file; an explicit path that does not exist is an error. ``environ``
    defaults to ``os.environ``. ``data_dir`` is returned as an absolute path,
    a relative one being taken from the current working directory.

    Raises ConfigError with a one-line message naming the key and its source.
    """
    if environ is None:
        environ = os.environ

    path: str | None
    if config_path is None:
        path = DEFAULT_CONFIG_FILE if os.path.exists(DEFAULT_CONFIG_FILE) else None
    else:
        path = os.fspath(config_path)
        if not os.path.exists(path):
            raise ConfigError(f"config file not found: {path}", source=path)
    if path is not None:
        path = os.path.abspath(path)

    settings = Settings(
        {key: list(value) if isinstance(value, list) else value for key, value in DEFAULTS.items()}
    )
    settings.config_path = path
    sources: dict[str, str] = {}
    layers = [
        _from_file(path) if path is not None else {},
        _from_environ(environ),
        _from_overrides(overrides or {}),
    ]
    for layer in layers:
        for key, (value, source) in layer.items():
            settings[key] = value
            sources[key] = source

    _validate(settings, sources)
    settings["data_dir"] = os.path.abspath(os.path.expanduser(settings["data_dir"]))
    return settings
