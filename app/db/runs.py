"""Queries on runs: their owner, status and latest event.

The latest event comes from the (run_id, seq) index: the run's own row
changes only with its status (migration 0003).
"""

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
    """The run with its latest event, in one index lookup each."""
    row = await conn.fetchrow(
        """
        SELECT r.id, r.org_id, r.status, r.ended_at, r.pruned_at,
               latest.seq AS last_seq, latest.id AS last_event_id
        FROM runs r
        LEFT JOIN LATERAL (
            SELECT e.seq, e.id FROM run_events e
            WHERE e.run_id = r.id
            ORDER BY e.seq DESC
            LIMIT 1
        ) AS latest ON true
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
        last_seq=row["last_seq"] or 0,
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
    last_seq = await conn.fetchval(
        "SELECT max(seq) FROM run_events WHERE run_id = $1", run_id
    )
    return int(last_seq or 0)
