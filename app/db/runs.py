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
    last_event_id: uuid.UUID | None
    has_ended: bool
    is_pruned: bool


async def get_run(conn: Any, run_id: uuid.UUID) -> Run | None:
    """The run with its latest event's id, in one index lookup each."""
    row = await conn.fetchrow(
        """
        SELECT r.id, r.org_id, r.status, r.last_seq, r.ended_at, r.pruned_at,
               e.id AS last_event_id
        FROM runs r
        LEFT JOIN run_events e ON e.run_id = r.id AND e.seq = r.last_seq
        WHERE r.id = $1
        """,
        run_id,
    )
    if row is None:
        return None
    return Run(
        id=row["id"],
        org_id=row["org_id"],
        status=row["status"],
        last_seq=row["last_seq"],
        last_event_id=row["last_event_id"],
        has_ended=row["ended_at"] is not None,
        is_pruned=row["pruned_at"] is not None,
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
