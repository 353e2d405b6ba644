"""Queries on organisations."""

import uuid
from typing import Any

from uuid_utils import uuid7


async def create_org(conn: Any, name: str, *, has_runtime: bool = True) -> uuid.UUID:
    org_id = uuid.UUID(str(uuid7()))
    await conn.execute(
        "INSERT INTO organisations (id, name, has_runtime) VALUES ($1, $2, $3)",
        org_id,
        name,
        has_runtime,
    )
    return org_id


async def org_exists(conn: Any, org_id: uuid.UUID) -> bool:
    found = await conn.fetchval("SELECT 1 FROM organisations WHERE id = $1", org_id)
    return found is not None
