"""Queries on API keys. Keys are found by their hash, never by plaintext."""

import datetime
import uuid
from dataclasses import dataclass
from typing import Any

from uuid_utils import uuid7


@dataclass(frozen=True, slots=True)
class KeyOwner:
    org_id: uuid.UUID
    has_runtime: bool


@dataclass(frozen=True, slots=True)
class KeyListing:
    prefix: str
    created_at: datetime.datetime
    revoked_at: datetime.datetime | None


async def find_active_key_owner(conn: Any, key_hash: bytes) -> KeyOwner | None:
    row = await conn.fetchrow(
        """
        SELECT k.org_id, o.has_runtime
        FROM api_keys k JOIN organisations o ON o.id = k.org_id
        WHERE k.key_hash = $1 AND k.revoked_at IS NULL
        """,
        key_hash,
    )
    if row is None:
        return None
    return KeyOwner(org_id=row["org_id"], has_runtime=row["has_runtime"])


async def insert_key(
    conn: Any, org_id: uuid.UUID, *, prefix: str, key_hash: bytes
) -> None:
    await conn.execute(
        "INSERT INTO api_keys (id, org_id, prefix, key_hash) VALUES ($1, $2, $3, $4)",
        uuid.UUID(str(uuid7())),
        org_id,
        prefix,
        key_hash,
    )


async def list_keys(conn: Any, org_id: uuid.UUID) -> list[KeyListing]:
    rows = await conn.fetch(
        """
        SELECT prefix, created_at, revoked_at FROM api_keys
        WHERE org_id = $1 ORDER BY created_at, id
        """,
        org_id,
    )
    return [
        KeyListing(row["prefix"], row["created_at"], row["revoked_at"]) for row in rows
    ]


async def revoke_by_hash(conn: Any, key_hash: bytes) -> int:
    """Revoke the key with this hash; the number of keys it matched (0 or 1)."""
    result = await conn.execute(
        """
        UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
        WHERE key_hash = $1
        """,
        key_hash,
    )
    return int(result.split()[-1])


async def count_keys_with_prefix(conn: Any, prefix: str) -> int:
    count = await conn.fetchval(
        "SELECT count(*) FROM api_keys WHERE prefix = $1", prefix
    )
    return int(count)


async def revoke_by_prefix(conn: Any, prefix: str) -> int:
    result = await conn.execute(
        """
        UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
        WHERE prefix = $1
        """,
        prefix,
    )
    return int(result.split()[-1])
