"""API keys: how they are made, hashed and shown.

A key is `st_live_` or `st_test_` and 43 URL-safe random characters (256
bits). Only its SHA-256 is stored: a key this random needs no slow hash, and
lookups by hash never compare plaintext. The first 16 characters stay visible
so that operators can tell keys apart.
"""

import hashlib
import secrets

LIVE_KEY_PREFIX = "st_live_"
TEST_KEY_PREFIX = "st_test_"
VISIBLE_PREFIX_LENGTH = 16
KEY_RANDOM_BYTES = 32


def generate_key(*, test: bool = False) -> str:
    prefix = TEST_KEY_PREFIX if test else LIVE_KEY_PREFIX
    return prefix + secrets.token_urlsafe(KEY_RANDOM_BYTES)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def visible_prefix(key: str) -> str:
    return key[:VISIBLE_PREFIX_LENGTH]


def is_key_format(text: str) -> bool:
    """Whether `text` looks like a whole key rather than a visible prefix."""
    return text.startswith((LIVE_KEY_PREFIX, TEST_KEY_PREFIX)) and len(text) > 40
