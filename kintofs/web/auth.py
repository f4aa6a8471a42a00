"""Who is calling: Basic credentials through the configured auth policies.

A policy is a callable ``(username, password) -> user id or None``; the first
that answers wins (Kinto's multiauth).  Bad or unknown credentials are not an
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
    credentials = basic_credentials(environ)
    if credentials is None:
        return None
    for policy in policies:
        userid = policy(*credentials)
        if userid:
            return userid
    return None
