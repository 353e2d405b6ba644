"""Queries on read tokens, found by their hash like API keys."""

import datetime
import uuid
from dataclasses import dataclass
from typing import Any

from app.tokens import generate_read_token, hash_token


@dataclass(frozen=True, slots=True)
class ReadTokenGrant:
    run_id: uuid.UUID
    org_id: uuid.UUID
    has_runtime: bool
    expires_at: datetime.datetime
    is_expired: bool


async def insert_read_token(
    conn: Any,
    token_hash: bytes,
    *,
    run_id: uuid.UUID,
    org_id: uuid.UUID,
    ttl: datetime.timedelta,
) -> datetime.datetime:
    """Store a token for one run; its expiry, by the database's clock."""
    expires_at: datetime.datetime = await conn.fetchval(
        """
        INSERT INTO read_tokens (token_hash, run_id, org_id, expires_at)
        VALUES ($1, $2, $3, now() + $4::interval)
        RETURNING expires_at
        """,
        token_hash,
        run_id,
        org_id,
        ttl,
    )
    return expires_at


async def find_read_token(conn: Any, token_hash: bytes) -> ReadTokenGrant | None:
    row = await conn.fetchrow(
        """
        SELECT t.run_id, t.org_id, o.has_runtime, t.expires_at,
               t.expires_at <= now() AS is_expired
        FROM read_tokens t JOIN organisations o ON o.id = t.org_id
        WHERE t.token_hash = $1
        """,
        token_hash,
    )
    if row is None:
        return None
    return ReadTokenGrant(
        run_id=row["run_id"],
        org_id=row["org_id"],
        has_runtime=row["has_runtime"],
        expires_at=row["expires_at"],
        is_expired=row["is_expired"],
    )


async def create_read_token(
    conn: Any, *, run_id: uuid.UUID, org_id: uuid.UUID, ttl: datetime.timedelta
) -> tuple[str, datetime.datetime]:
    """Mint a token for one run; the token is returned once and stored hashed."""
    token = generate_read_token()
    expires_at = await insert_read_token(
        conn, hash_token(token), run_id=run_id, org_id=org_id, ttl=ttl
    )
    return token, expires_at
