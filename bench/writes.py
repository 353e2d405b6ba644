"""Scenario 4: how fast writers publish, through the contract and without it.

Each writer is its own asyncpg connection writing flat out, one autocommit
statement per event, to a run of its own (or, in one row, all to one run).

- `publish`: SPEC's INSERT into run_events, through both triggers.
- `plain_notify`: an INSERT into a table without triggers and a pg_notify in
  the same statement (one round trip, like the publish INSERT).
- `plain`: the same INSERT without the NOTIFY, which shows what the NOTIFY
  itself costs: PostgreSQL serialises the commits of notifying transactions
  on one global lock.
"""

import asyncio
import logging
import statistics
import time
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from bench.phases import Bench, JsonObject
from bench.processes import SERVICE, stop_server
from bench.publishers import WRITER_APPLICATION_NAME

logger = logging.getLogger(__name__)

STATEMENTS = {
    "publish": (
        "INSERT INTO run_events (run_id, type, phase, payload)"
        " VALUES ($1, 'phase_changed', 'bench', $2::jsonb)"
    ),
    "plain_notify": (
        "WITH e AS (INSERT INTO bench_plain_events (run_id, type, phase, payload)"
        " VALUES ($1, 'phase_changed', 'bench', $2::jsonb) RETURNING run_id, id)"
        " SELECT pg_notify('bench_plain_events', e.run_id::text || ' ' || e.id)"
        " FROM e"
    ),
    "plain": (
        "INSERT INTO bench_plain_events (run_id, type, phase, payload)"
        " VALUES ($1, 'phase_changed', 'bench', $2::jsonb)"
    ),
}
PAYLOAD = '{"step": 1, "note": "a candidate was scored on the eval set"}'
MAX_WRITES_PER_SECOND = 50_000
WRITER_COUNTS = (1, 4)
WARM_UP_SECONDS = 2.0


async def write_flat_out(
    connections: list[Any], statement: str, run_ids: list[uuid.UUID], seconds: float
) -> float:
    """Every connection writes as fast as it can for `seconds`; events/s in all."""
    limit = int(seconds * MAX_WRITES_PER_SECOND)

    async def write(conn: Any, run_id: uuid.UUID, deadline: float) -> int:
        count = 0
        while count < limit and time.monotonic() < deadline:
            await conn.execute(statement, run_id, PAYLOAD)
            count += 1
        return count

    started = time.monotonic()
    counts = await asyncio.gather(
        *(
            write(conn, run_id, started + seconds)
            for conn, run_id in zip(connections, run_ids, strict=True)
        )
    )
    return sum(counts) / (time.monotonic() - started)


@dataclass(frozen=True)
class Cell:
    mode: str
    writers: int
    streams: str
    same_run: bool = False


async def measure_writes(bench: Bench) -> list[JsonObject]:
    """Every cell several times, in turns, so that noise hits all of them alike.

    A round runs the cells without streams, then the cells with streams on
    the first writer's run (the service is up all along, and holds no
    streams in between): `following` writes to the followed run, `idle` to
    runs nobody follows.
    """
    database = bench.require_database()
    plan = bench.plan
    run_ids = await database.create_runs(max(WRITER_COUNTS))
    idle_runs = await database.create_runs(max(WRITER_COUNTS))
    streams = plan.writes_streams
    quiet = [
        Cell(mode, writers, "none") for writers in WRITER_COUNTS for mode in STATEMENTS
    ]
    quiet.append(Cell("publish", max(WRITER_COUNTS), "none", same_run=True))
    loaded = [
        Cell("publish", writers, f"{streams} {label}")
        for label in ("following", "idle")
        for writers in WRITER_COUNTS
    ]
    measured: dict[Cell, list[float]] = {cell: [] for cell in quiet + loaded}

    connections = [
        await asyncpg.connect(
            database.dsn, server_settings={"application_name": WRITER_APPLICATION_NAME}
        )
        for _ in range(max(WRITER_COUNTS))
    ]
    server = await bench.start(SERVICE)
    try:
        # Writes run slow for a few seconds after the service starts; a
        # throwaway cell waits that out.
        await asyncio.sleep(WARM_UP_SECONDS)
        await write_flat_out(
            connections[:1], STATEMENTS["publish"], idle_runs[:1], WARM_UP_SECONDS
        )
        for round_number in range(plan.writes_rounds):
            logger.info("bench.writes", extra={"round": round_number + 1})
            for cell in quiet:
                targets = [run_ids[0]] * cell.writers if cell.same_run else run_ids
                measured[cell].append(
                    await write_flat_out(
                        connections[: cell.writers],
                        STATEMENTS[cell.mode],
                        targets[: cell.writers],
                        plan.writes_seconds,
                    )
                )
            for cell in loaded:
                # Fresh runs and streams for every cell: closing the streams
                # ends whatever fan-out backlog a cell left, and new streams
                # on a new run have nothing to replay.
                fresh = await database.create_runs(max(WRITER_COUNTS))
                await bench.client.open(
                    server.port,
                    [(bench.stream_path(SERVICE, fresh[0]), streams)],
                    bench.stream_headers(SERVICE),
                )
                await asyncio.sleep(0.5)
                targets = fresh if cell.streams.endswith("following") else idle_runs
                measured[cell].append(
                    await write_flat_out(
                        connections[: cell.writers],
                        STATEMENTS[cell.mode],
                        targets[: cell.writers],
                        plan.writes_seconds,
                    )
                )
                await bench.client.close_all()
                await bench.client.window()
    finally:
        await bench.client.close_all()
        await stop_server(server)
        for conn in connections:
            await conn.close()

    return [
        {
            "mode": cell.mode,
            "writers": cell.writers,
            "runs": 1 if cell.same_run else cell.writers,
            "streams": cell.streams,
            "events_per_s": round(statistics.median(values), 1),
            "rounds": [round(v, 1) for v in values],
        }
        for cell, values in measured.items()
    ]
