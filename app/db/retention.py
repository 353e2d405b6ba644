"""Removing the event history of runs that ended long ago, in small batches."""

import datetime
import uuid
from typing import Any

# Small enough that each DELETE holds its locks briefly and the WAL it writes
# stays modest; large enough that a million events take a few hundred trips.
DELETE_BATCH_ROWS = 5000


async def find_runs_to_prune(
    conn: Any, ended_before: datetime.datetime
) -> list[uuid.UUID]:
    rows = await conn.fetch(
        """
        SELECT id FROM runs
        WHERE ended_at < $1 AND pruned_at IS NULL
        ORDER BY ended_at
        """,
        ended_before,
    )
    return [row["id"] for row in rows]


async def prune_run(conn: Any, run_id: uuid.UUID) -> int:
    """Delete one run's events batch by batch, then mark it pruned; the count.

    The run is marked only after its last batch, so an interrupted prune
    leaves it unmarked and the next one finishes the job.
    """
    deleted = 0
    while True:
        result = await conn.execute(
            """
            DELETE FROM run_events
            WHERE id IN (
                SELECT id FROM run_events WHERE run_id = $1 LIMIT $2
            )
            """,
            run_id,
            DELETE_BATCH_ROWS,
        )
        batch = int(result.split()[-1])
        deleted += batch
        if batch < DELETE_BATCH_ROWS:
            break
    await conn.execute("UPDATE runs SET pruned_at = now() WHERE id = $1", run_id)
    return deleted
