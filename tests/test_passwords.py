"""Password hashes and the verified-credentials cache (kintofs.passwords)."""

import re

import pytest

from kintofs.passwords import VerifiedCredentials, hash_password, verify_password


def test_hash_is_salted_scrypt_and_verifies():
    first, second = hash_password("s3cret"), hash_password("s3cret")
    assert re.fullmatch(r"\$scrypt\$ln=13,r=8,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}", first)
    assert first != second  # a fresh salt each time
    assert "s3cret" not in first
    assert verify_password("s3cret", first) and verify_password("s3cret", second)
    assert not verify_password("s3cret ", first)
    assert not verify_password("", first)


@pytest.mark.parametrize("password", ["pässwörd", "\ud800lone surrogate", "a:b", "x" * 10000])
def test_any_text_is_a_password(password):
    assert verify_password(password, hash_password(password))
    assert not verify_password(password + "!", hash_password(password))


@pytest.mark.parametrize(
    "stored",
    [
        None,
        12,
        "",
        "s3cret",
        "$2b$12$abcdefghijklmnopqrstuuO7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e",
        "$scrypt$ln=13,r=8,p=1$c2FsdA$@@@@",  # bad base64
        "$scrypt$ln=40,r=8,p=1$c2FsdHNhbHRzYWx0$a2V5",  # cost beyond the allowed maximum
        "$scrypt$ln=0,r=8,p=1$c2FsdHNhbHRzYWx0$a2V5",
    ],
)
def test_unusable_hashes_never_verify(stored):
    assert verify_password("s3cret", stored) is False


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_cache_remembers_a_check_while_the_account_is_unchanged():
    clock = Clock()
    cache = VerifiedCredentials(30, clock=clock)
    old_hash, new_hash = hash_password("old"), hash_password("new")
    assert cache.check("alice", "old", 1, old_hash)
    # Same account version: the remembered answer stands (no hash computed).
    assert cache.check("alice", "old", 1, new_hash)
    # A new version of the account (password changed): checked again at once.
    assert not cache.check("alice", "old", 2, new_hash)
    assert cache.check("alice", "new", 2, new_hash)
    # Refusals are remembered too, and also end with the version.
    guess_hash = hash_password("guess")
    assert not cache.check("alice", "guess", 2, new_hash)
    assert not cache.check("alice", "guess", 2, guess_hash)
    assert cache.check("alice", "guess", 3, guess_hash)


def test_cache_entries_expire_and_uses_renew_them():
    clock = Clock()
    cache = VerifiedCredentials(30, clock=clock)
    stored = hash_password("pw")
    assert cache.check("alice", "pw", 1, stored)
    clock.now += 20
    assert cache.check("alice", "pw", 1, "unusable")  # remembered, renewed to +30
    clock.now += 20
    assert cache.check("alice", "pw", 1, "unusable")  # still within the renewed period
    clock.now += 31
    assert not cache.check("alice", "pw", 1, "unusable")  # expired: checked again


def test_cache_can_be_disabled():
    cache = VerifiedCredentials(0)
    assert cache.check("alice", "pw", 1, hash_password("pw"))
    assert not cache.check("alice", "pw", 1, "unusable")


def test_cache_keys_never_hold_the_password():
    cache = VerifiedCredentials(30)
    cache.check("alice", "very-secret-password", 1, hash_password("very-secret-password"))
    assert not any(b"very-secret-password" in key for key in cache._entries)
