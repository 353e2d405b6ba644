"""Scenario 3: reading one long run from its first event, by one and ten clients.

The reference is the same read without any server: asyncpg pages of the
service's page size, each row encoded with orjson into the same frame.
"""

import logging
import time
import uuid
from typing import Any

import asyncpg

from bench.peers.frames import PAGE_SIZE, READ_AFTER, encode_row
from bench.phases import Bench, JsonObject
from bench.processes import LISTEN_PER_CLIENT, POLLING, SERVICE, stop_server

logger = logging.getLogger(__name__)

SYSTEMS = (SERVICE, LISTEN_PER_CLIENT, POLLING)
SEED_BATCH_ROWS = 20_000
REPLAY_TIMEOUT_SECONDS = 120.0
TRIGGERS = ("run_events_publish", "run_events_notify")

# The rows the publish trigger would have written, written directly, in
# batches of generate_series rather than one validated, notified insert
# each. (Through the trigger before migration 0003, every event also updated
# the run's row, and seeding fell to 250 events/s while a transaction stayed
# open elsewhere.) The replay reads the same rows either way.
SEED_BATCH = """
INSERT INTO run_events (id, run_id, org_id, seq, type, phase, payload, created_at)
SELECT selftune_uuidv7(), $1, $2, g, 'phase_changed', 'replay',
       jsonb_build_object('i', g, 'note', 'a candidate was scored on the eval set'),
       clock_timestamp()
FROM generate_series($3::int, $4::int) AS g
"""


async def seed_long_run(conn: Any, run_id: uuid.UUID, events: int) -> float:
    """`events - 1` events written directly, then a terminal one through the
    publish INSERT; the seconds it took. Only the scratch database's own
    triggers are switched off, inside one transaction."""
    started = time.monotonic()
    org_id = await conn.fetchval("SELECT org_id FROM runs WHERE id = $1", run_id)
    async with conn.transaction():
        for trigger in TRIGGERS:
            await conn.execute(f"ALTER TABLE run_events DISABLE TRIGGER {trigger}")
        for first in range(1, events, SEED_BATCH_ROWS):
            last = min(events - 1, first + SEED_BATCH_ROWS - 1)
            await conn.execute(SEED_BATCH, run_id, org_id, first, last)
        await conn.execute("UPDATE runs SET status = 'running' WHERE id = $1", run_id)
        for trigger in TRIGGERS:
            await conn.execute(f"ALTER TABLE run_events ENABLE TRIGGER {trigger}")
    await conn.execute(
        "INSERT INTO run_events (run_id, type, status) "
        "VALUES ($1, 'run_completed', 'succeeded')",
        run_id,
    )
    return time.monotonic() - started


async def measure_reference(dsn: str, run_id: uuid.UUID) -> JsonObject:
    """A bare asyncpg read of the run plus orjson encoding of every row."""
    conn = await asyncpg.connect(
        dsn, server_settings={"application_name": "bench-seed"}
    )
    try:
        started = time.monotonic()
        last_seq, events, size = 0, 0, 0
        while True:
            rows = await conn.fetch(READ_AFTER, run_id, last_seq, PAGE_SIZE)
            if not rows:
                break
            frames = b"".join(encode_row(row) for row in rows)
            events += len(rows)
            size += len(frames)
            last_seq = rows[-1]["seq"]
            if len(rows) < PAGE_SIZE:
                break
        seconds = time.monotonic() - started
    finally:
        await conn.close()
    return {
        "events": events,
        "seconds": round(seconds, 3),
        "events_per_s": round(events / seconds),
        "mb_per_s": round(size / seconds / 1e6, 1),
    }


async def measure_replay(bench: Bench) -> JsonObject:
    database = bench.require_database()
    (run_id,) = await database.create_runs(1)
    seed_seconds = await seed_long_run(
        database.monitor, run_id, bench.plan.replay_events
    )
    logger.info("bench.replay_seeded", extra={"seconds": round(seed_seconds, 1)})

    result: JsonObject = {
        "events": bench.plan.replay_events,
        "seed_seconds": round(seed_seconds, 1),
        "reference": await measure_reference(database.dsn, run_id),
        "systems": [],
    }
    for system in SYSTEMS:
        logger.info("bench.replay", extra={"system": system})
        server = await bench.start(system)
        try:
            for clients in (1, bench.plan.replay_clients):
                result["systems"].append(
                    await read_whole_run(bench, system, server.port, run_id, clients)
                )
        finally:
            await stop_server(server)
    return result


async def read_whole_run(
    bench: Bench, system: str, port: int, run_id: uuid.UUID, clients: int
) -> JsonObject:
    client = bench.client
    try:
        await client.open(
            port,
            [(bench.stream_path(system, run_id), clients)],
            bench.stream_headers(system),
        )
        ended = await client.wait_ended(REPLAY_TIMEOUT_SECONDS)
        await client.window()
    finally:
        await client.close_all()
    seconds = max(ended["seconds"], 1e-6)
    return {
        "system": system,
        "clients": clients,
        "completed": ended["ended"],
        "events": ended["events"],
        "seconds": ended["seconds"],
        "events_per_s": round(ended["events"] / seconds),
        "mb_per_s": round(ended["bytes"] / seconds / 1e6, 1),
    }
