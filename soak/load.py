"""Writers: runs that follow each other in slots, several writers per run."""

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import asyncpg

from app.db import events as event_queries
from app.db import runs as run_queries
from app.errors import EventRejected

WRITER_APPLICATION_NAME = "selftune-soak-writer"

# Pacing per writer: a few events a second, like a busy runtime.
WRITE_PAUSE_SECONDS = (0.05, 0.3)
PAYLOAD_BYTES = (100, 2000)
# How often one slot's run, picked at random, ends and a new one starts.
ROTATE_EVERY_SECONDS = (3.0, 10.0)


@dataclass
class Slot:
    """A place where runs follow each other; writers write to its live run."""

    index: int
    runs: list[uuid.UUID]
    ended: set[uuid.UUID] = field(default_factory=set)
    finished: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def run_id(self) -> uuid.UUID:
        return self.runs[-1]

    def announce(self) -> None:
        """Wake the clients waiting for this slot's next run, or its end."""
        self.changed.set()
        self.changed = asyncio.Event()


@dataclass
class WriteStats:
    committed: int = 0
    refused_after_end: int = 0
    runs_ended: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep for `seconds` or until `stop`; whether the soak is stopping."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def start_run(conn: asyncpg.Connection, org_id: uuid.UUID) -> uuid.UUID:
    run_id = await run_queries.create_run(conn, org_id)
    await event_queries.publish_event(conn, run_id, "run_enqueued", status="queued")
    return run_id


async def end_run(
    conn: asyncpg.Connection,
    slot: Slot,
    stats: WriteStats,
    *,
    next_run: uuid.UUID | None,
) -> None:
    """Publish the live run's terminal event, then hand the slot to `next_run`.

    The run is marked ended first, so that a writer refused for writing after
    the terminal event knows the refusal was expected.
    """
    ending = slot.run_id
    slot.ended.add(ending)
    await event_queries.publish_event(conn, ending, "run_completed", status="succeeded")
    stats.runs_ended += 1
    if next_run is None:
        slot.finished = True
    else:
        slot.runs.append(next_run)
    slot.announce()


async def write_events(
    dsn: str, slot: Slot, stats: WriteStats, stop: asyncio.Event, rng: random.Random
) -> None:
    """Commit events to the slot's live run until `stop`, one per transaction."""
    conn = await asyncpg.connect(
        dsn, server_settings={"application_name": WRITER_APPLICATION_NAME}
    )
    try:
        number = 0
        while not stop.is_set():
            number += 1
            await write_one(conn, slot, stats, number, rng)
            await pause(stop, rng.uniform(*WRITE_PAUSE_SECONDS))
    finally:
        await conn.close()


async def write_one(
    conn: asyncpg.Connection,
    slot: Slot,
    stats: WriteStats,
    number: int,
    rng: random.Random,
) -> None:
    run_id = slot.run_id
    payload = {"n": number, "blob": "x" * rng.randint(*PAYLOAD_BYTES)}
    started = time.perf_counter()
    try:
        await event_queries.publish_event(
            conn, run_id, "phase_changed", phase=f"step-{number}", payload=payload
        )
    except EventRejected as exc:
        if run_id in slot.ended:
            stats.refused_after_end += 1
        else:
            stats.errors[f"refused: {exc}"] += 1
        return
    except (asyncpg.PostgresError, OSError) as exc:
        stats.errors[type(exc).__name__] += 1
        return
    stats.latencies.append(time.perf_counter() - started)
    stats.committed += 1


async def rotate_runs(
    dsn: str,
    slots: list[Slot],
    org_id: uuid.UUID,
    stats: WriteStats,
    stop: asyncio.Event,
    rng: random.Random,
) -> None:
    """Every so often end one slot's run and start a new one in its place."""
    conn = await asyncpg.connect(
        dsn, server_settings={"application_name": WRITER_APPLICATION_NAME}
    )
    try:
        while not await pause(stop, rng.uniform(*ROTATE_EVERY_SECONDS)):
            slot = rng.choice(slots)
            await end_run(conn, slot, stats, next_run=await start_run(conn, org_id))
    finally:
        await conn.close()
