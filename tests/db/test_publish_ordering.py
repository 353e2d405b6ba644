"""Sequences under concurrency: gap-free, per run, and in commit order.

Writers of one run queue behind the run's row lock, which the publish trigger
takes and holds until commit. These tests hold a transaction open on purpose
and check, from a third session, that the other writer really waits.
"""

import asyncio
import itertools
import uuid

import asyncpg
import pytest

from tests.db.backends import Connect, wait_until_blocked
from tests.db.notifications import Notifications
from tests.db.writer import WRITERS, Write, read_events, read_run, write_with_sql
from tests.fixtures.factories import MakeRun, Publish, Tenant

# A writer released from the lock finishes its insert in milliseconds.
RELEASE_TIMEOUT_SECONDS = 10.0

WRITER_COUNT = 8
EVENTS_PER_WRITER = 100

# One transaction's bulk insert takes under a second here. The untouched
# run row is what pins the fix; the deadline, generous for a loaded machine,
# turns a return of the quadratic cost into a failure instead of a hang.
BULK_EVENTS = 20_000
BULK_TIMEOUT_SECONDS = 20

COMMIT_ORDER_TRANSACTIONS = 25


async def begin(conn: asyncpg.Connection) -> asyncpg.transaction.Transaction:
    transaction = conn.transaction()
    await transaction.start()
    return transaction


async def test_publish_rollback_returns_sequence_number(
    db: asyncpg.Connection,
    connect: Connect,
    write: Write,
    publish: Publish,
    run_id: uuid.UUID,
) -> None:
    await publish(run_id, "run_started")
    writer = await connect()
    transaction = await begin(writer)
    await write(writer, run_id, "phase_changed", phase="lost")
    lost_seq = await writer.fetchval(
        "SELECT max(seq) FROM run_events WHERE run_id = $1", run_id
    )

    await transaction.rollback()
    await write(db, run_id, "phase_changed", phase="kept")

    events = await read_events(db, run_id)
    assert lost_seq == 2
    assert [(event["seq"], event["phase"]) for event in events] == [
        (1, None),
        (2, "kept"),
    ]
    assert (await read_run(db, run_id))["last_seq"] == 2


async def test_publish_orders_sequences_by_commit_order(
    db: asyncpg.Connection, connect: Connect, run_id: uuid.UUID
) -> None:
    """The writer whose transaction began first but inserted second gets 2."""
    first, second = await connect(), await connect()
    second_transaction = await begin(second)
    await second.execute("SELECT 1")
    first_transaction = await begin(first)
    first_id, second_id = uuid.uuid4(), uuid.uuid4()
    await write_with_sql(first, run_id, "phase_changed", phase="a", event_id=first_id)

    second_insert = asyncio.create_task(
        write_with_sql(second, run_id, "phase_changed", phase="b", event_id=second_id)
    )
    await wait_until_blocked(db, second.get_server_pid(), by=first.get_server_pid())
    assert not second_insert.done()
    await first_transaction.commit()
    await asyncio.wait_for(second_insert, RELEASE_TIMEOUT_SECONDS)
    await second_transaction.commit()

    events = await read_events(db, run_id)
    assert [(event["id"], event["seq"]) for event in events] == [
        (first_id, 1),
        (second_id, 2),
    ]
    assert events[0]["created_at"] < events[1]["created_at"]
    assert (await read_run(db, run_id))["last_seq"] == 2


async def test_publish_gives_waiter_the_number_of_rolled_back_insert(
    db: asyncpg.Connection, connect: Connect, run_id: uuid.UUID
) -> None:
    first, second = await connect(), await connect()
    first_transaction = await begin(first)
    await write_with_sql(first, run_id, "phase_changed", phase="lost")

    second_insert = asyncio.create_task(
        write_with_sql(second, run_id, "phase_changed", phase="kept")
    )
    await wait_until_blocked(db, second.get_server_pid(), by=first.get_server_pid())
    await first_transaction.rollback()
    await asyncio.wait_for(second_insert, RELEASE_TIMEOUT_SECONDS)

    events = await read_events(db, run_id)
    assert [(event["seq"], event["phase"]) for event in events] == [(1, "kept")]


async def test_publish_refuses_retry_that_waited_for_original(
    db: asyncpg.Connection, connect: Connect, run_id: uuid.UUID
) -> None:
    """A retry racing its own uncommitted original is refused once it commits."""
    original, retry = await connect(), await connect()
    event_id = uuid.uuid4()
    original_transaction = await begin(original)
    await write_with_sql(
        original, run_id, "run_started", status="running", event_id=event_id
    )

    retried = asyncio.create_task(
        write_with_sql(
            retry, run_id, "run_started", status="running", event_id=event_id
        )
    )
    await wait_until_blocked(db, retry.get_server_pid(), by=original.get_server_pid())
    await original_transaction.commit()

    with pytest.raises(asyncpg.UniqueViolationError, match="already exists"):
        await asyncio.wait_for(retried, RELEASE_TIMEOUT_SECONDS)
    assert [event["id"] for event in await read_events(db, run_id)] == [event_id]


async def test_publish_accepts_retry_after_original_rolled_back(
    db: asyncpg.Connection, connect: Connect, run_id: uuid.UUID
) -> None:
    original, retry = await connect(), await connect()
    event_id = uuid.uuid4()
    original_transaction = await begin(original)
    await write_with_sql(
        original, run_id, "run_started", status="running", event_id=event_id
    )

    retried = asyncio.create_task(
        write_with_sql(
            retry, run_id, "run_started", status="running", event_id=event_id
        )
    )
    await wait_until_blocked(db, retry.get_server_pid(), by=original.get_server_pid())
    await original_transaction.rollback()
    await asyncio.wait_for(retried, RELEASE_TIMEOUT_SECONDS)

    events = await read_events(db, run_id)
    assert [(event["id"], event["seq"]) for event in events] == [(event_id, 1)]


async def test_publish_refuses_waiter_once_concurrent_terminal_commits(
    db: asyncpg.Connection, connect: Connect, run_id: uuid.UUID
) -> None:
    ender, late = await connect(), await connect()
    ender_transaction = await begin(ender)
    await write_with_sql(ender, run_id, "run_failed", status="failed")

    late_insert = asyncio.create_task(
        write_with_sql(late, run_id, "phase_changed", phase="too late")
    )
    await wait_until_blocked(db, late.get_server_pid(), by=ender.get_server_pid())
    await ender_transaction.commit()

    with pytest.raises(asyncpg.ObjectNotInPrerequisiteStateError, match="ended"):
        await asyncio.wait_for(late_insert, RELEASE_TIMEOUT_SECONDS)
    assert [event["type"] for event in await read_events(db, run_id)] == ["run_failed"]
    assert (await read_run(db, run_id))["last_seq"] == 1


async def test_publish_writers_of_different_runs_do_not_wait_for_each_other(
    db: asyncpg.Connection,
    connect: Connect,
    make_run: MakeRun,
    tenant: Tenant,
    run_id: uuid.UUID,
) -> None:
    other_run = await make_run(tenant)
    first, second = await connect(), await connect()
    first_transaction = await begin(first)
    await write_with_sql(first, run_id, "phase_changed", phase="open")

    await asyncio.wait_for(
        write_with_sql(second, other_run, "phase_changed", phase="free"),
        RELEASE_TIMEOUT_SECONDS,
    )
    await first_transaction.commit()

    assert [event["seq"] for event in await read_events(db, other_run)] == [1]
    assert [event["seq"] for event in await read_events(db, run_id)] == [1]


async def test_publish_concurrent_writers_number_gap_free(
    db: asyncpg.Connection, connect: Connect, run_id: uuid.UUID
) -> None:
    """Eight sessions, both writers, 800 inserts on one run: seqs 1..800."""
    writers = [await connect() for _ in range(WRITER_COUNT)]
    kinds = itertools.cycle(sorted(WRITERS))

    async def write_many(conn: asyncpg.Connection, number: int, kind: str) -> None:
        for index in range(EVENTS_PER_WRITER):
            payload = {"writer": number, "index": index}
            await WRITERS[kind](
                conn, run_id, "phase_changed", phase="p", payload=payload
            )

    await asyncio.gather(
        *(
            write_many(conn, number, kind)
            for number, (conn, kind) in enumerate(zip(writers, kinds, strict=False))
        )
    )

    rows = await db.fetch(
        """
        SELECT seq,
               (payload->>'writer')::int AS writer,
               (payload->>'index')::int AS index
        FROM run_events WHERE run_id = $1 ORDER BY seq
        """,
        run_id,
    )
    total = WRITER_COUNT * EVENTS_PER_WRITER
    assert [row["seq"] for row in rows] == list(range(1, total + 1))
    for number in range(WRITER_COUNT):
        own = [row["index"] for row in rows if row["writer"] == number]
        assert own == list(range(EVENTS_PER_WRITER))
    assert (await read_run(db, run_id))["last_seq"] == total


async def test_publish_gives_one_transaction_consecutive_numbers(
    db: asyncpg.Connection, connect: Connect, run_id: uuid.UUID
) -> None:
    """Events written in one transaction come out as one block, in order."""
    writers = [await connect() for _ in range(4)]

    async def write_batches(conn: asyncpg.Connection, number: int) -> None:
        for batch in range(10):
            async with conn.transaction():
                for index in range(5):
                    payload = {"batch": f"{number}-{batch}", "index": index}
                    await write_with_sql(
                        conn, run_id, "phase_changed", phase="p", payload=payload
                    )

    await asyncio.gather(*(write_batches(conn, n) for n, conn in enumerate(writers)))

    rows = await db.fetch(
        "SELECT seq, payload->>'batch' AS batch, (payload->>'index')::int AS index"
        " FROM run_events WHERE run_id = $1 ORDER BY seq",
        run_id,
    )
    assert [row["seq"] for row in rows] == list(range(1, 201))
    blocks = [rows[start : start + 5] for start in range(0, 200, 5)]
    for block in blocks:
        assert len({row["batch"] for row in block}) == 1
        assert [row["index"] for row in block] == list(range(5))


async def test_publish_numbers_many_events_of_one_transaction_in_seconds(
    db: asyncpg.Connection, run_id: uuid.UUID
) -> None:
    """One INSERT of 20,000 events for one run, without touching the run's row.

    The trigger used to update the run's row for every event, so each insert
    walked the chain of row versions the transaction had left so far: this
    took 13.5 s here, and 100,000 events did not finish in four minutes.
    """
    run_version = await db.fetchval("SELECT xmin FROM runs WHERE id = $1", run_id)

    async with db.transaction():
        await db.execute(f"SET LOCAL statement_timeout = '{BULK_TIMEOUT_SECONDS}s'")
        await db.execute(
            """
            INSERT INTO run_events (run_id, type, phase, payload)
            SELECT $1, 'phase_changed', 'bulk', jsonb_build_object('index', g)
            FROM generate_series(1, $2) AS g
            """,
            run_id,
            BULK_EVENTS,
        )

    rows = await db.fetch(
        "SELECT seq, (payload->>'index')::int AS index FROM run_events"
        " WHERE run_id = $1 ORDER BY seq",
        run_id,
    )
    assert [(row["seq"], row["index"]) for row in rows] == [
        (number, number) for number in range(1, BULK_EVENTS + 1)
    ]
    assert await db.fetchval("SELECT xmin FROM runs WHERE id = $1", run_id) == (
        run_version
    )


async def test_publish_concurrent_writers_number_in_commit_order(
    db: asyncpg.Connection,
    connect: Connect,
    notifications: Notifications,
    run_id: uuid.UUID,
) -> None:
    """Notifications arrive in commit order, and carry 1, 2, 3, ... in turn."""
    writers = [await connect() for _ in range(4)]

    async def write_transactions(conn: asyncpg.Connection, number: int) -> None:
        for index in range(COMMIT_ORDER_TRANSACTIONS):
            async with conn.transaction():
                await write_with_sql(
                    conn, run_id, "phase_changed", phase=f"{number}-{index}"
                )
                await write_with_sql(
                    conn, run_id, "phase_changed", phase=f"{number}-{index}"
                )

    await asyncio.gather(
        *(write_transactions(conn, n) for n, conn in enumerate(writers))
    )

    total = 2 * COMMIT_ORDER_TRANSACTIONS * len(writers)
    received = await notifications.receive_until(f"{run_id} {total}")
    assert received == [f"{run_id} {seq}" for seq in range(1, total + 1)]
    phases = [event["phase"] for event in await read_events(db, run_id)]
    assert phases[0::2] == phases[1::2]
