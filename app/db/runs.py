"""Queries on runs: their owner, status and latest sequence."""

import uuid
from dataclasses import dataclass
from typing import Any

from uuid_utils import uuid7


@dataclass(frozen=True, slots=True)
class Run:
    id: uuid.UUID
    org_id: uuid.UUID
    status: str
    last_seq: int
    has_ended: bool


async def get_run(conn: Any, run_id: uuid.UUID) -> Run | None:
    row = await conn.fetchrow(
        "SELECT id, org_id, status, last_seq, ended_at FROM runs WHERE id = $1",
        run_id,
    )
    if row is None:
        return None
    return Run(
        id=row["id"],
        org_id=row["org_id"],
        status=row["status"],
        last_seq=row["last_seq"],
        has_ended=row["ended_at"] is not None,
    )


async def create_run(conn: Any, org_id: uuid.UUID) -> uuid.UUID:
    run_id = uuid.UUID(str(uuid7()))
    await conn.execute(
        "INSERT INTO runs (id, org_id) VALUES ($1, $2)",
        run_id,
        org_id,
    )
    return run_id


async def read_last_seq(conn: Any, run_id: uuid.UUID) -> int:
    """The sequence of the run's latest committed event (0 before the first)."""
    last_seq = await conn.fetchval("SELECT last_seq FROM runs WHERE id = $1", run_id)
    return int(last_seq or 0)
