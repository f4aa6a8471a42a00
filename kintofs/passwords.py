"""Account passwords: salted scrypt hashes, checked in constant time.

A hash is one self-describing string, stored as the account's ``password``
field (Kinto stores a bcrypt string there and returns it in responses too)::

    $scrypt$ln=13,r=8,p=1$<salt, base64>$<key, base64>

``ln`` is log2 of scrypt's cost N.  N=2**13, r=8, p=1 costs 8 MiB of memory
and about 30 ms on a small 2-core machine: slow enough to make guessing
expensive, fast enough that a login (or a cache miss, see
:class:`VerifiedCredentials`) does not stall the daemon.  The parameters
travel with each hash, so raising them later keeps old hashes valid.

Used by the daemon's ``account`` auth policy and by ``kintofs account``;
knows nothing of HTTP or storage.
"""

import base64
import hashlib
import hmac
import os
import re
import secrets
import threading
import time

LOG2_N, BLOCK_SIZE, PARALLELISM = 13, 8, 1
SALT_BYTES = 16
KEY_BYTES = 32

# A hand-edited hash must not make one login cost seconds or gigabytes.
MAX_LOG2_N, MAX_BLOCK_SIZE, MAX_PARALLELISM = 20, 32, 16
MAX_MEMORY = 1024 * 1024 * 1024

_HASH = re.compile(r"\$scrypt\$ln=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)")


def hash_password(password):
    """A fresh salted hash of ``password`` (a str)."""
    salt = os.urandom(SALT_BYTES)
    key = _derive(password, salt, LOG2_N, BLOCK_SIZE, PARALLELISM)
    return f"$scrypt$ln={LOG2_N},r={BLOCK_SIZE},p={PARALLELISM}${_b64(salt)}${_b64(key)}"


def verify_password(password, stored_hash):
    """True if ``password`` hashes to ``stored_hash``; False for any unusable hash."""
    match = _HASH.fullmatch(stored_hash) if isinstance(stored_hash, str) else None
    if match is None:
        return False
    log2_n, block_size, parallelism = (int(match.group(i)) for i in (1, 2, 3))
    if not (
        1 <= log2_n <= MAX_LOG2_N
        and 1 <= block_size <= MAX_BLOCK_SIZE
        and 1 <= parallelism <= MAX_PARALLELISM
    ):
        return False
    try:
        salt, expected = _unb64(match.group(4)), _unb64(match.group(5))
        key = _derive(password, salt, log2_n, block_size, parallelism, len(expected))
    except ValueError:  # bad base64, or parameters OpenSSL refuses
        return False
    return hmac.compare_digest(key, expected)


def _derive(password, salt, log2_n, block_size, parallelism, length=KEY_BYTES):
    return hashlib.scrypt(
        _utf8(password),
        salt=salt,
        n=2**log2_n,
        r=block_size,
        p=parallelism,
        maxmem=MAX_MEMORY,
        dklen=length,
    )


def _utf8(text):
    # JSON bodies may carry lone surrogates ("\ud800"); they hash like any text.
    return text.encode("utf-8", "surrogatepass")


def _b64(raw):
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text):
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


class VerifiedCredentials:
    """A short-lived memory of password checks, so a client sending the same
    credentials on every request pays the slow hash once per ``ttl`` seconds.

    Entries are keyed by an HMAC of (account id, password) under a key that
    lives only in this process: the clear password is never kept.  Each
    entry remembers the account's ``last_modified``; a different value (a
    password change or a deletion, by this daemon or by another process such
    as ``kintofs account passwd``) makes the entry worthless at once.
    Successful checks refresh their expiry, as Kinto's cache does.
    """

    MAX_ENTRIES = 10000

    def __init__(self, ttl_seconds, clock=time.monotonic):
        self.ttl = ttl_seconds
        self.clock = clock
        self._key = secrets.token_bytes(32)
        self._entries = {}  # digest -> (account last_modified, verified, expires at)
        self._guard = threading.Lock()

    def check(self, account_id, password, last_modified, stored_hash):
        """True if ``password`` is the password of the account as last modified at
        ``last_modified`` with hash ``stored_hash``."""
        if self.ttl <= 0:
            return verify_password(password, stored_hash)
        digest = self._digest(account_id, password)
        now = self.clock()
        with self._guard:
            entry = self._entries.get(digest)
            if entry is not None and entry[0] == last_modified and entry[2] > now:
                if entry[1]:
                    self._entries[digest] = (entry[0], True, now + self.ttl)
                return entry[1]
        verified = verify_password(password, stored_hash)
        self._remember(digest, (last_modified, verified, now + self.ttl), now)
        return verified

    def _digest(self, account_id, password):
        message = _utf8(account_id) + b"\0" + _utf8(password)
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def _remember(self, digest, entry, now):
        with self._guard:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries = {k: v for k, v in self._entries.items() if v[2] > now}
                if len(self._entries) >= self.MAX_ENTRIES:
                    self._entries.clear()
            self._entries[digest] = entry
