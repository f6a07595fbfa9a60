"""Proxy keys: how they look, and the only form in which they are stored.

A key is 256 random bits, so a plain SHA-256 is enough to store it: a slow hash (bcrypt,
argon2) protects guessable passwords from brute force, and nobody can enumerate 2**256 keys.
No salt either: a salt stops one precomputed table from cracking many guessable secrets at once,
and no table holds random 256-bit keys. The fast hash is also what lets every request be checked
against an in-memory table.

That table is a dict keyed by the hash, and its lookup is not constant-time; it need not be. Its
timing can only depend on the digest of what the caller sent, never on the bytes of a stored
key, and a caller cannot steer a digest towards a stored one (that is a preimage search): so,
unlike comparing the presented key with a stored key character by character, it leaks nothing
that brings anyone closer to a key.
"""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "sk-mp-"
VISIBLE_PREFIX_LENGTH = len(KEY_PREFIX) + 6


def new_key() -> str:
    """A fresh proxy key: `sk-mp-` and 43 url-safe characters (256 random bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_of(key: str) -> str:
    """The SHA-256 of a key, in hex: what the keys table stores and the lookup is keyed by."""
    return hashlib.sha256(key.encode()).hexdigest()


def visible_prefix(key: str) -> str:
    """The few first characters kept in the clear, so people can tell their keys apart."""
    return key[:VISIBLE_PREFIX_LENGTH]


def is_proxy_key(credential: str) -> bool:
    return credential.startswith(KEY_PREFIX)
