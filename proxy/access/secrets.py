"""Proxy keys: how they look, and the only form in which they are stored.

A key is 256 random bits, so a plain SHA-256 is enough to store it: a slow hash (bcrypt,
argon2) protects guessable passwords from brute force, and nobody can enumerate 2**256 keys.
The fast hash is also what lets every request be checked against an in-memory table.
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
    return hashlib.sha256(key.encode()).hexdigest()


def visible_prefix(key: str) -> str:
    """The few first characters kept in the clear, so people can tell their keys apart."""
    return key[:VISIBLE_PREFIX_LENGTH]


def is_proxy_key(credential: str) -> bool:
    return credential.startswith(KEY_PREFIX)
