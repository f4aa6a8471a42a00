"""The accounts plugin: ``/v1/accounts`` and the ``account`` auth policy.

Protocol section 10.2.  An account is an ordinary object of kind
``account`` at the top of the store (``<data>/accounts/<id>.json`` and its
``<id>.acl`` sidecar), served by the generic ResourceView.  Where Kinto
treats accounts differently, :class:`AccountHooks` says so:

* Kinto files each account under a "parent" equal to its own id and picks
  the parent from the caller: an administrator (a principal in
  ``account_write_principals``) reaches every account, an anonymous caller
  the account named in the URL or body, anyone else only their own.  An
  account out of reach behaves as missing (after authorization), which gives
  Kinto's answers: 404 for a shared account, 400 "Username and account ID do
  not match." for a PUT on someone else's.
* Anonymous callers cannot list (401 "Cannot read accounts.").
* ``password`` is required, stored only as a salted hash (kintofs.passwords)
  and returned as that hash, as Kinto returns its bcrypt string.
* Whoever writes an account for its owner (anonymous sign-up, administrator)
  makes the account, not themselves, its writer.
"""

import json
import logging

from .. import ids
from ..acl.principals import EVERYONE
from ..config import ConfigError
from ..passwords import VerifiedCredentials, hash_password
from ..web import errors
from ..web.kindhooks import KindHooks
from ..web.resource import Kind, ResourceView

logger = logging.getLogger("kintofs")

POLICY_NAME = "account"


# -- who is asking ---------------------------------------------------------


def is_administrator(state):
    return bool(set(state.principals) & set(state.settings["account_write_principals"]))


def own_account_id(state):
    """The id the caller would have as an account (Kinto's unprefixed user id)."""
    return state.userid.partition(":")[2] if state.userid else None


def acts_for_others(state):
    """Anonymous callers and administrators write accounts on an owner's behalf."""
    return state.userid is None or is_administrator(state)


# -- the resource ----------------------------------------------------------


class AccountHooks(KindHooks):
    def before_create(self, view):
        # Kinto reads the new account's id from the body before anything else
        # when the caller is not the account's owner (the id picks the parent).
        if acts_for_others(view.state) and _posted_id(view) is None:
            raise errors.invalid_param("body", "data.id", "data.id in body: Required")

    def reachable(self, view, object_id):
        state = view.state
        return acts_for_others(state) or object_id == own_account_id(state)

    def restrict_list(self, view, visible):
        state = view.state
        if state.userid is None:
            raise errors.http_error(401, errors.UNDEFINED, error="Cannot read accounts.")
        if is_administrator(state):
            return visible
        own = {own_account_id(state)}
        return own if visible is None else visible & own

    def prepare_data(self, view, object_id, data, current):
        # Kinto's order: the schema (data, password), then the id rules.
        patching = view.state.method == "PATCH"
        body = _parsed_body(view)
        if not patching and "data" not in body:
            raise errors.invalid_param("body", "data", "Required")
        password = data.get("password")
        _check_password(password, "password" if patching else "data.password")
        if object_id is None:
            raise errors.invalid_param("body", "data.id", "Accounts must have an ID.")
        if not acts_for_others(view.state) and object_id != own_account_id(view.state):
            raise errors.invalid_param("body", "data.id", "Username and account ID do not match.")
        # A PATCH that leaves the password alone keeps the stored hash; any
        # password sent (even equal to the hash) is hashed, as Kinto does.
        if _password_sent(body) or current is None or password != current.data.get("password"):
            data = {**data, "password": hash_password(password)}
        return data

    def writer_principal(self, view, object_id):
        state = view.state
        if acts_for_others(state):
            return f"{POLICY_NAME}:{object_id}"
        return state.userid


ACCOUNT = Kind("account", hooks=AccountHooks())


def _parsed_body(view):
    """The request body as JSON (``{}`` when empty); None if it is not JSON."""
    raw = view.raw_body()
    try:
        return json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError):
        return None


def _posted_id(view):
    """``data.id`` of the body, or None when there is none (bad JSON included)."""
    body = _parsed_body(view)
    data = body.get("data") if isinstance(body, dict) else None
    return data.get("id") if isinstance(data, dict) else None


def _password_sent(body):
    """Did the body name a password (as opposed to keeping the stored hash)?"""
    data = body.get("data") if isinstance(body, dict) else None
    return isinstance(data, dict) and "password" in data


def _check_password(value, name):
    """Kinto's (colander's) 400 unless ``value`` can be a password."""
    if value is None or value == "":
        raise errors.invalid_param("body", name, "Required")
    if not isinstance(value, str):
        raise errors.invalid_param("body", name, f"{value} is not a string: {{'password': ''}}")


# -- authentication ----------------------------------------------------------


class AccountPolicy:
    """The ``account`` auth policy: Basic credentials of an existing account.

    ``on_failure()`` is called for each wrong password of an existing account
    (the daemon's failed-login limiter).
    """

    def __init__(self, store, cache_ttl_seconds, on_failure=None):
        self.store = store
        self.verified = VerifiedCredentials(cache_ttl_seconds)
        self.on_failure = on_failure or (lambda: None)

    def __call__(self, username, password):
        if not ids.is_valid_id(username, ids.ACCOUNT_ID):
            return None
        stored = self.store.get((), ACCOUNT.name, username)
        if stored is None:
            return None
        # The account's last_modified tells the cache whether a verified
        # password still holds, whoever changed the account (even another process).
        if self.verified.check(
            username, password, stored.data.get("last_modified"), stored.data.get("password")
        ):
            return f"{POLICY_NAME}:{username}"
        self.on_failure()
        return None


# -- setup -----------------------------------------------------------------


def check_settings(settings):
    """Refuse the configurations Kinto refuses to start with."""
    policies = settings["auth_policies"]
    if (
        "basicauth" in policies
        and POLICY_NAME in policies
        and (policies.index("basicauth") < policies.index(POLICY_NAME))
    ):
        raise ConfigError(
            "auth_policies: 'basicauth' should not be mentioned before 'account' "
            "(a wrong account password falls back to basicauth, not the reverse)",
            key="auth_policies",
        )
    creators = set(settings["account_create_principals"]) - {EVERYONE}
    unable = sorted(creators - set(settings["account_write_principals"]))
    if unable:
        raise ConfigError(
            "account_create_principals: these principals are not in account_write_principals, "
            "so they could only create their own account, which is not what the setting says: "
            f"{', '.join(unable)}. Add them to account_write_principals (administrators) "
            "or remove them from account_create_principals.",
            key="account_create_principals",
        )
    if POLICY_NAME not in policies:
        logger.warning(
            "the accounts plugin is enabled but auth_policies does not list "
            "'account': nobody can log in with an account"
        )


def setup(service):
    check_settings(service.settings)
    service.add_capability(
        "accounts",
        {
            "description": "Manage user accounts.",
            "url": "https://kinto.readthedocs.io/en/latest/api/1.x/accounts.html",
            "validation_enabled": False,
        },
    )
    service.add_auth_policy(
        POLICY_NAME,
        AccountPolicy(
            service.store,
            service.settings["account_cache_ttl_seconds"],
            on_failure=getattr(service, "record_failed_login", None),
        ),
    )

    def accounts(state, account_id=None):
        view = ResourceView(state, ACCOUNT, ())
        if account_id is None:
            return view.plural(state.method)
        return view.object(state.method, account_id)

    service.add_route("/v1/accounts", "ANY", accounts)
    service.add_route("/v1/accounts/<account_id>", "ANY", accounts)
