"""Who is calling: Basic credentials through the configured auth policies.

A policy is a callable ``(username, password) -> user id or None``; the first
that answers wins (Kinto's multiauth).  Bad or unknown credentials are not an
error: the request is simply anonymous.
"""

import base64
import binascii
import hashlib
import hmac


def basic_credentials(environ):
    """``(username, password)`` from an ``Authorization: Basic`` header, or None."""
    header = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        return None
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:  # as Pyramid: utf-8 first, then latin-1
        decoded = raw.decode("latin-1")
    username, separator, password = decoded.partition(":")
    if not separator:
        return None
    return username, password


def basicauth_policy(secret):
    """Kinto's ``basicauth``: any non-empty username, id = HMAC of the pair."""
    key = secret.encode("utf-8")

    def identify(username, password):
        if not username:
            return None
        digest = hmac.new(key, f"{username}:{password}".encode(), hashlib.sha256)
        return "basicauth:" + digest.hexdigest()

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
