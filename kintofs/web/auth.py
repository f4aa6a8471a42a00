"""Who is calling: Basic credentials through the configured auth policies.

A policy is a callable ``(username, password) -> user id or None``, or an
object whose ``identify_request(environ)`` reads the request itself (and whose
``challenge`` is its ``WWW-Authenticate`` value); the first that answers wins
(Kinto's multiauth).  Bad or unknown credentials are not an
error: the request is simply anonymous.

``basicauth`` remembers the user ids it computed (:class:`RecentUserids`):
its HMAC-SHA256 was most of what authenticating a request cost, and a client
sends the same credentials every time.  Only this policy's answers are
remembered, and they never change: the other policies (accounts) decide
afresh on each request, so a changed or deleted account counts at once.
"""

import base64
import binascii
import hashlib
import hmac
import secrets
import threading


def basic_credentials(environ):
    """``(username, password)`` from an ``Authorization: Basic`` header, or None."""
    header = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):  # ValueError: a non-ASCII header
        return None
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:  # as Pyramid: utf-8 first, then latin-1
        decoded = raw.decode("latin-1")
    username, separator, password = decoded.partition(":")
    if not separator:
        return None
    return username, password


class RecentUserids:
    """The user ids of up to ``MAX_ENTRIES`` credentials, the oldest forgotten first.

    Entries are keyed by a keyed BLAKE2b digest of the credentials, under a
    key that lives only in this process: the clear password is never kept.
    """

    MAX_ENTRIES = 4096

    def __init__(self):
        self._keyed = hashlib.blake2b(key=secrets.token_bytes(32), digest_size=32)
        self._entries = {}  # digest -> user id, oldest first
        self._guard = threading.Lock()

    def digest(self, message):
        hashing = self._keyed.copy()  # the key already hashed in
        hashing.update(message)
        return hashing.digest()

    def get(self, digest):
        return self._entries.get(digest)

    def add(self, digest, userid):
        with self._guard:
            if len(self._entries) >= self.MAX_ENTRIES:
                del self._entries[next(iter(self._entries))]
            self._entries[digest] = userid


def basicauth_policy(secret):
    """Kinto's ``basicauth``: any non-empty username, id = HMAC of the pair."""
    key = secret.encode("utf-8")
    recent = RecentUserids()

    def identify(username, password):
        if not username:
            return None
        message = f"{username}:{password}".encode()
        digest = recent.digest(message)
        userid = recent.get(digest)
        if userid is None:
            userid = "basicauth:" + hmac.digest(key, message, "sha256").hex()
            recent.add(digest, userid)
        return userid

    return identify


def authenticate(environ, policies):
    """The user id given by the first policy that knows the caller, or None.

    A policy with an ``identify_request(environ)`` method reads the request
    itself (the openid plugin's bearer tokens); the others are called with
    the Basic credentials, when there are some.
    """
    credentials = basic_credentials(environ)
    for policy in policies:
        identify_request = getattr(policy, "identify_request", None)
        if identify_request is not None:
            userid = identify_request(environ)
        elif credentials is not None:
            userid = policy(*credentials)
        else:
            continue
        if userid:
            return userid
    return None
