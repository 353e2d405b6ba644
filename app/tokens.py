"""Scoped read tokens: short-lived bearer tokens that read one run and nothing else.

An organisation's API key must never reach a browser; a customer's backend
mints a read token for the run a page shows and hands that over instead. A
token is `st_read_` and 43 URL-safe random characters; like a key, only its
SHA-256 is stored, so tokens need no signing secret and can be looked up,
expired and revoked in the database.
"""

import datetime
import re
import secrets

from app.keys import hash_key

READ_TOKEN_PREFIX = "st_read_"
TOKEN_RANDOM_BYTES = 32

DEFAULT_TTL = datetime.timedelta(minutes=15)
# A page that stays open longer mints a new token; a day bounds the damage of
# one that leaks.
MAX_TTL = datetime.timedelta(hours=24)

TTL_PATTERN = re.compile(r"(\d+)\s*([smhd]?)")
TTL_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def generate_read_token() -> str:
    return READ_TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_RANDOM_BYTES)


def is_read_token(bearer: str) -> bool:
    return bearer.startswith(READ_TOKEN_PREFIX)


def hash_token(token: str) -> bytes:
    return hash_key(token)


def parse_ttl(text: str) -> datetime.timedelta:
    """`900`, `900s`, `15m`, `2h` or `1d`, between one second and MAX_TTL.

    Raises:
        ValueError: with words that say what is accepted.
    """
    match = TTL_PATTERN.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not a duration: use 900, 900s, 15m, 2h or 1d")
    ttl = datetime.timedelta(seconds=int(match[1]) * TTL_UNIT_SECONDS[match[2]])
    check_ttl(ttl)
    return ttl


def check_ttl(ttl: datetime.timedelta) -> None:
    if ttl < datetime.timedelta(seconds=1) or ttl > MAX_TTL:
        raise ValueError("a read token lives between 1 second and 24 hours")
