"""Writers in REPEATABLE READ and SERIALIZABLE transactions (migration 0003).

Such a writer keeps the snapshot its transaction began with. Its first event
for a run must fail with serialization_failure, and store nothing, when
another writer committed an event of that run the snapshot does not show;
otherwise it is numbered like any other. These tests use two real sessions.
"""

import asyncio
import itertools
import uuid

import asyncpg
import pytest

from tests.db.backends import Connect, wait_until_blocked
from tests.db.notifications import Notifications
from tests.db.writer import read_events, write_with_sql

SERIALIZATION_FAILURE = "40001"
UNIQUE_VIOLATION = "23505"
CHECK_VIOLATION = "23514"

STALE_SNAPSHOT = "has events that this transaction's snapshot does not show"

# A writer released from the lock finishes its insert in milliseconds.
RELEASE_TIMEOUT_SECONDS = 10.0

SNAPSHOT_ISOLATIONS = ["repeatable_read", "serializable"]

WRITER_COUNT = 4
EVENTS_PER_WRITER = 25
# Generous: a writer is refused only because others published meanwhile,
# and they publish this many events in all.
MAX_ATTEMPTS = WRITER_COUNT * EVENTS_PER_WRITER


async def begin_with_snapshot(
    conn: asyncpg.Connection, isolation: str
) -> asyncpg.transaction.Transaction:
    """A transaction whose snapshot is taken now, by its first statement."""
    transaction = conn.transaction(isolation=isolation)
    await transaction.start()
    await conn.fetchval("SELECT 1")
    return transaction


async def read_seqs_and_phases(
    conn: asyncpg.Connection, run_id: uuid.UUID
) -> list[tuple[int, str | None]]:
    return [(event["seq"], event["phase"]) for event in await read_events(conn, run_id)]


@pytest.mark.parametrize("isolation", SNAPSHOT_ISOLATIONS)
async def test_publish_refuses_snapshot_that_misses_committed_event(
    db: asyncpg.Connection, connect: Connect, run_id: uuid.UUID, isolation: str
) -> None:
    """The other writer's event needs no status: nothing touched the run's row."""
    writer = await connect()
    transaction = await begin_with_snapshot(writer, isolation)
    await write_with_sql(db, run_id, "phase_changed", phase="other")

    with pytest.raises(asyncpg.SerializationError) as refused:
        await write_with_sql(writer, run_id, "phase_changed", phase="stale")
    await transaction.rollback()
    async with writer.transaction(isolation=isolation):
        await write_with_sql(writer, run_id, "phase_changed", phase="retried")

    assert refused.value.sqlstate == SERIALIZATION_FAILURE
    assert f"run {run_id} {STALE_SNAPSHOT}" in refused.value.message
    assert "retry the whole transaction" in refused.value.hint
    assert await read_seqs_and_phases(db, run_id) == [(1, "other"), (2, "retried")]


@pytest.mark.parametrize("isolation", SNAPSHOT_ISOLATIONS)
async def test_publish_refuses_snapshot_writer_after_waiting_for_commit(
    db: asyncpg.Connection, connect: Connect, run_id: uuid.UUID, isolation: str
) -> None:
    """Both writers use the same isolation level; the second waits for the lock."""
    first, second = await connect(), await connect()
    second_transaction = await begin_with_snapshot(second, isolation)
    first_transaction = await begin_with_snapshot(first, isolation)
    await write_with_sql(first, run_id, "phase_changed", phase="first")

    second_insert = asyncio.create_task(
        write_with_sql(second, run_id, "phase_changed", phase="second")
    )
    await wait_until_blocked(db, second.get_server_pid(), by=first.get_server_pid())
    await first_transaction.commit()

    with pytest.raises(asyncpg.SerializationError):
        await asyncio.wait_for(second_insert, RELEASE_TIMEOUT_SECONDS)
    await second_transaction.rollback()
    assert await read_seqs_and_phases(db, run_id) == [(1, "first")]


@pytest.mark.parametrize("isolation", SNAPSHOT_ISOLATIONS)
async def test_publish_numbers_snapshot_writer_whose_blocker_rolled_back(
    db: asyncpg.Connection, connect: Connect, run_id: uuid.UUID, isolation: str
) -> None:
    """Waiting alone is no conflict: the number it waited for came back."""
    blocker, writer = await connect(), await connect()
    writer_transaction = await begin_with_snapshot(writer, isolation)
    blocker_transaction = await begin_with_snapshot(blocker, "read_committed")
    await write_with_sql(blocker, run_id, "phase_changed", phase="lost")

    insert = asyncio.create_task(
        write_with_sql(writer, run_id, "phase_changed", phase="kept")
    )
    await wait_until_blocked(db, writer.get_server_pid(), by=blocker.get_server_pid())
    await blocker_transaction.rollback()
    await asyncio.wait_for(insert, RELEASE_TIMEOUT_SECONDS)
    await writer_transaction.commit()

    assert await read_seqs_and_phases(db, run_id) == [(1, "kept")]


async def test_publish_refuses_snapshot_that_misses_status_change(
    db: asyncpg.Connection, connect: Connect, run_id: uuid.UUID
) -> None:
    """A status event updates the run's row, and PostgreSQL itself refuses."""
    writer = await connect()
    transaction = await begin_with_snapshot(writer, "repeatable_read")
    await write_with_sql(db, run_id, "run_started", status="running")

    with pytest.raises(asyncpg.SerializationError):
        await write_with_sql(writer, run_id, "phase_changed", phase="stale")
    await transaction.rollback()

    assert [event["type"] for event in await read_events(db, run_id)] == ["run_started"]


async def test_publish_refuses_retry_of_id_committed_after_snapshot(
    db: asyncpg.Connection, connect: Connect, run_id: uuid.UUID
) -> None:
    """The stale retry must not learn a wrong answer; its own retry learns the
    right one, that the id is taken."""
    event_id = uuid.uuid4()
    retry = await connect()
    transaction = await begin_with_snapshot(retry, "repeatable_read")
    await write_with_sql(db, run_id, "phase_changed", phase="a", event_id=event_id)

    with pytest.raises(asyncpg.SerializationError):
        await write_with_sql(
            retry, run_id, "phase_changed", phase="a", event_id=event_id
        )
    await transaction.rollback()
    with pytest.raises(asyncpg.UniqueViolationError) as refused:
        async with retry.transaction(isolation="repeatable_read"):
            await write_with_sql(
                retry, run_id, "phase_changed", phase="a", event_id=event_id
            )

    assert refused.value.sqlstate == UNIQUE_VIOLATION
    assert f"event {event_id} already exists" in refused.value.message
    assert [event["id"] for event in await read_events(db, run_id)] == [event_id]


@pytest.mark.parametrize("isolation", SNAPSHOT_ISOLATIONS)
async def test_publish_numbers_snapshot_transaction_consecutively(
    db: asyncpg.Connection,
    connect: Connect,
    notifications: Notifications,
    run_id: uuid.UUID,
    isolation: str,
) -> None:
    """Only the first event of the run checks the snapshot, and the check
    leaves no row and no notification behind."""
    await write_with_sql(db, run_id, "run_started", status="running")
    writer = await connect()

    async with writer.transaction(isolation=isolation):
        await writer.execute(
            """
            INSERT INTO run_events (run_id, type, phase)
            SELECT $1, 'phase_changed', 'p' || g FROM generate_series(1, 500) AS g
            """,
            run_id,
        )
        await write_with_sql(writer, run_id, "phase_changed", phase="last")

    received = await notifications.receive_until(f"{run_id} 502")
    events = await read_events(db, run_id)
    assert [event["seq"] for event in events] == list(range(1, 503))
    assert [event["phase"] for event in events[1:4]] == ["p1", "p2", "p3"]
    assert received == [f"{run_id} {seq}" for seq in range(1, 503)]


async def test_publish_numbers_snapshot_writer_across_savepoints(
    db: asyncpg.Connection, connect: Connect, run_id: uuid.UUID
) -> None:
    """A rolled-back savepoint gives its number and its lock back; the events
    after it are checked and numbered again."""
    writer = await connect()

    async with writer.transaction(isolation="repeatable_read"):
        async with writer.transaction():
            await write_with_sql(writer, run_id, "phase_changed", phase="kept")
        savepoint = writer.transaction()
        await savepoint.start()
        await write_with_sql(writer, run_id, "phase_changed", phase="lost")
        await savepoint.rollback()
        await write_with_sql(writer, run_id, "phase_changed", phase="after")

    assert await read_seqs_and_phases(db, run_id) == [(1, "kept"), (2, "after")]


async def test_publish_snapshot_writers_retrying_number_gap_free(
    db: asyncpg.Connection, connect: Connect, run_id: uuid.UUID
) -> None:
    """Writers of every isolation level on one run; the refused ones retry."""
    isolations = itertools.cycle(["repeatable_read", "serializable", "read_committed"])
    writers = [(await connect(), next(isolations)) for _ in range(WRITER_COUNT)]

    async def write_many(conn: asyncpg.Connection, number: int, isolation: str) -> None:
        for index in range(EVENTS_PER_WRITER):
            for _ in range(MAX_ATTEMPTS):
                try:
                    async with conn.transaction(isolation=isolation):
                        await conn.fetchval("SELECT 1")
                        await write_with_sql(
                            conn, run_id, "phase_changed", phase=f"{number}-{index}"
                        )
                    break
                except asyncpg.SerializationError:
                    continue
            else:
                raise AssertionError(f"writer {number} was refused every time")

    await asyncio.gather(
        *(write_many(conn, number, iso) for number, (conn, iso) in enumerate(writers))
    )

    events = await read_events(db, run_id)
    total = WRITER_COUNT * EVENTS_PER_WRITER
    assert [event["seq"] for event in events] == list(range(1, total + 1))
    for number in range(WRITER_COUNT):
        own = [
            event["phase"]
            for event in events
            if event["phase"].startswith(f"{number}-")
        ]
        assert own == [f"{number}-{index}" for index in range(EVENTS_PER_WRITER)]


async def test_publish_refuses_probe_type_from_writer(
    db: asyncpg.Connection, run_id: uuid.UUID
) -> None:
    """The type the snapshot check uses inside the trigger is no event type."""
    with pytest.raises(asyncpg.CheckViolationError) as refused:
        await db.execute(
            "INSERT INTO run_events (run_id, type) VALUES ($1, 'selftune_seq_probe')",
            run_id,
        )

    assert refused.value.sqlstate == CHECK_VIOLATION
    assert "unknown event type 'selftune_seq_probe'" in refused.value.message
    assert await read_events(db, run_id) == []
