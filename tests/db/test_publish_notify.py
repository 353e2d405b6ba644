"""NOTIFY on commit: `<run uuid> <seq>` on channel selftune_run_events.

A notification the listener never gets cannot be waited for, so each test
that expects silence commits a marker event afterwards and checks that the
marker is the only thing that arrived: PostgreSQL delivers notifications in
commit order, so anything sent earlier would have come first.
"""

import asyncio
import uuid

import asyncpg
import pytest

from tests.db.backends import Connect, wait_until_blocked
from tests.db.notifications import Notifications
from tests.db.writer import Write, read_events, write_with_sql
from tests.fixtures.factories import MakeRun, Publish, Tenant

# A writer released from the lock finishes its insert in milliseconds.
RELEASE_TIMEOUT_SECONDS = 10.0

LARGE_PAYLOAD_BYTES = 200 * 1024


def notification(run_id: uuid.UUID, seq: int) -> str:
    return f"{run_id} {seq}"


async def begin(conn: asyncpg.Connection) -> asyncpg.transaction.Transaction:
    transaction = conn.transaction()
    await transaction.start()
    return transaction


async def test_notify_sends_run_and_seq_for_each_committed_event(
    db: asyncpg.Connection,
    write: Write,
    notifications: Notifications,
    run_id: uuid.UUID,
) -> None:
    await write(db, run_id, "run_enqueued", status="queued")
    await write(db, run_id, "run_started", status="running")
    await write(db, run_id, "phase_changed", phase="generating")

    received = await notifications.receive_until(notification(run_id, 3))

    assert received == [notification(run_id, seq) for seq in (1, 2, 3)]


async def test_notify_waits_for_commit(
    connect: Connect,
    publish: Publish,
    notifications: Notifications,
    make_run: MakeRun,
    tenant: Tenant,
    run_id: uuid.UUID,
) -> None:
    marker_run = await make_run(tenant)
    writer = await connect()
    transaction = await begin(writer)
    for phase in ("a", "b", "c"):
        await write_with_sql(writer, run_id, "phase_changed", phase=phase)

    await publish(marker_run, "run_enqueued")
    before_commit = await notifications.receive_until(notification(marker_run, 1))
    await transaction.commit()
    after_commit = await notifications.receive_until(notification(run_id, 3))

    assert before_commit == [notification(marker_run, 1)]
    assert after_commit == [notification(run_id, seq) for seq in (1, 2, 3)]


async def test_notify_sends_nothing_for_rolled_back_insert(
    db: asyncpg.Connection,
    connect: Connect,
    publish: Publish,
    notifications: Notifications,
    run_id: uuid.UUID,
) -> None:
    writer = await connect()
    transaction = await begin(writer)
    await write_with_sql(writer, run_id, "phase_changed", phase="lost")
    await transaction.rollback()

    await publish(run_id, "phase_changed", phase="kept")

    received = await notifications.receive_until(notification(run_id, 1))
    assert received == [notification(run_id, 1)]
    assert [event["phase"] for event in await read_events(db, run_id)] == ["kept"]


async def test_notify_sends_nothing_for_refused_event(
    db: asyncpg.Connection,
    publish: Publish,
    notifications: Notifications,
    make_run: MakeRun,
    tenant: Tenant,
    run_id: uuid.UUID,
) -> None:
    marker_run = await make_run(tenant)
    await publish(run_id, "phase_changed")

    with pytest.raises(asyncpg.CheckViolationError):
        await write_with_sql(db, run_id, "phase_changed")
    await publish(marker_run, "run_enqueued")

    received = await notifications.receive_until(notification(marker_run, 1))
    assert received == [notification(run_id, 1), notification(marker_run, 1)]


async def test_notify_follows_commit_order_not_insert_order(
    connect: Connect,
    notifications: Notifications,
    make_run: MakeRun,
    tenant: Tenant,
    run_id: uuid.UUID,
) -> None:
    other_run = await make_run(tenant)
    early, late = await connect(), await connect()
    early_transaction = await begin(early)
    await write_with_sql(early, run_id, "phase_changed", phase="inserted first")

    await asyncio.wait_for(
        write_with_sql(late, other_run, "phase_changed", phase="inserted last"),
        RELEASE_TIMEOUT_SECONDS,
    )
    await early_transaction.commit()

    received = await notifications.receive_until(notification(run_id, 1))
    assert received == [notification(other_run, 1), notification(run_id, 1)]


async def test_notify_follows_commit_order_of_waiting_writers(
    db: asyncpg.Connection,
    connect: Connect,
    notifications: Notifications,
    run_id: uuid.UUID,
) -> None:
    first, second = await connect(), await connect()
    first_transaction = await begin(first)
    await write_with_sql(first, run_id, "phase_changed", phase="a")

    second_insert = asyncio.create_task(
        write_with_sql(second, run_id, "phase_changed", phase="b")
    )
    await wait_until_blocked(db, second.get_server_pid(), by=first.get_server_pid())
    await first_transaction.commit()
    await asyncio.wait_for(second_insert, RELEASE_TIMEOUT_SECONDS)

    received = await notifications.receive_until(notification(run_id, 2))
    assert received == [notification(run_id, 1), notification(run_id, 2)]


async def test_notify_follows_sequence_order_under_concurrent_writers(
    connect: Connect,
    notifications: Notifications,
    run_id: uuid.UUID,
) -> None:
    """Each event is notified once, and a run's notifications come in seq order."""
    writers = [await connect() for _ in range(4)]

    async def write_many(conn: asyncpg.Connection) -> None:
        for _ in range(50):
            await write_with_sql(conn, run_id, "phase_changed", phase="p")

    await asyncio.gather(*(write_many(conn) for conn in writers))

    received = await notifications.receive_until(notification(run_id, 200))
    assert received == [notification(run_id, seq) for seq in range(1, 201)]


async def test_notify_keeps_payload_small_for_large_event(
    db: asyncpg.Connection,
    write: Write,
    notifications: Notifications,
    run_id: uuid.UUID,
) -> None:
    """PostgreSQL caps a notification at 8000 bytes; the event may be far larger."""
    payload = {"log": "x" * LARGE_PAYLOAD_BYTES}

    await write(db, run_id, "phase_changed", phase="big", payload=payload)

    received = await notifications.receive_until(notification(run_id, 1))
    assert received == [notification(run_id, 1)]
    stored = await db.fetchval(
        "SELECT octet_length(payload::text) FROM run_events WHERE run_id = $1", run_id
    )
    assert stored > LARGE_PAYLOAD_BYTES
