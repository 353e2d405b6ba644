"""The live tail: hand-over, order, ending, heartbeats, exactly-once under load."""

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from app.db import events as event_queries
from app.db.engine import to_asyncpg_dsn
from app.ids import EVENT_PREFIX, format_id
from tests.fixtures.factories import MakeRun, MakeTenant, Publish, run_typeid, seed_run
from tests.fixtures.server import LiveServer, start_live_server
from tests.fixtures.sse import auth, open_stream, read_all_events

IsolatedServer = Callable[..., Awaitable[tuple[LiveServer, str]]]


@pytest.fixture(scope="module")
def tight_server(migrated_database_url: str) -> Iterator[LiveServer]:
    """A server with tiny buffers and pages, so that overflow, paging and the
    gap path run in every test that uses it, plus a fast heartbeat."""
    with start_live_server(
        migrated_database_url,
        stream_buffer_events=3,
        replay_page_size=7,
        heartbeat_seconds=0.3,
    ) as server:
        yield server


@pytest.mark.parametrize(
    ("terminal_type", "status"),
    [
        ("run_completed", "succeeded"),
        ("run_completed", "no_winner"),
        ("run_failed", "failed"),
        ("run_cancelled", "cancelled"),
    ],
)
async def test_live_events_arrive_then_the_stream_ends_after_the_terminal_event(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish: Publish,
    terminal_type: str,
    status: str,
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    first = await publish(run_id, "run_enqueued")
    url = live_server.events_url(run_typeid(run_id))

    async with open_stream(url, tenant.key) as reader:
        replayed = await reader.next_event()
        live = await publish(run_id, "run_started")
        tailed = await reader.next_event()
        terminal = await publish(run_id, terminal_type, status=status)
        ending = await reader.next_event()
        after_end = await reader.next_event()

    assert replayed is not None
    assert replayed["id"] == first.typeid
    assert tailed is not None
    assert tailed["id"] == live.typeid
    assert ending is not None
    assert ending["id"] == terminal.typeid
    assert ending["status"] == status
    assert after_end is None
    assert reader.ended
    async with httpx.AsyncClient(timeout=10) as client:
        resumed = await client.get(
            url, headers=auth(tenant.key, **{"Last-Event-ID": terminal.typeid})
        )
    assert resumed.status_code == 204


async def test_live_quiet_stream_sends_ping_comments(
    tight_server: LiveServer, make_tenant: MakeTenant, make_run: MakeRun
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)

    async with open_stream(
        tight_server.events_url(run_typeid(run_id)), tenant.key, read_timeout=5
    ) as reader:
        frames = [await reader.next_frame() for _ in range(3)]

    assert frames[0] is not None
    assert frames[0].fields == [("retry", "3000")]
    for frame in frames[1:]:
        assert frame is not None
        assert frame.comments == ["ping"]
        assert not frame.fields


async def test_live_many_writers_and_late_joiners_see_every_event_once(
    tight_server: LiveServer,
    migrated_database_url: str,
    make_tenant: MakeTenant,
    make_run: MakeRun,
) -> None:
    """Clients join at random moments from random cursors while three writers
    commit for the same run; each must read exactly the sequence after its
    cursor. The tiny buffers of tight_server force the overflow path."""
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    url = tight_server.events_url(run_typeid(run_id))
    dsn = to_asyncpg_dsn(migrated_database_url)
    committed: dict[int, str] = {}
    progress = asyncio.Condition()
    rng = random.Random(7)

    async def write(count: int) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for index in range(count):
                event_id, seq = await event_queries.publish_event(
                    conn, run_id, "phase_changed", phase=f"step-{index}"
                )
                async with progress:
                    committed[seq] = format_id(EVENT_PREFIX, event_id)
                    progress.notify_all()
        finally:
            await conn.close()

    async def follow(after_events: int) -> tuple[int, list[str]]:
        async with progress:
            await progress.wait_for(lambda: len(committed) >= after_events)
            cursor_seq = rng.choice([0, *committed]) if committed else 0
        params = {"cursor": committed[cursor_seq]} if cursor_seq else {}
        events = await read_all_events(url, tenant.key, params=params, read_timeout=30)
        return cursor_seq, [event["id"] for event in events]

    writers = [asyncio.create_task(write(400)) for _ in range(3)]
    followers = [
        asyncio.create_task(follow(after)) for after in (0, 0, 50, 300, 700, 1100)
    ]
    await asyncio.gather(*writers)
    terminal_id, terminal_seq = await finish_run(dsn, run_id)
    committed[terminal_seq] = terminal_id
    results = await asyncio.gather(*followers)

    assert sorted(committed) == list(range(1, 1202))
    for cursor_seq, received in results:
        expected = [committed[seq] for seq in range(cursor_seq + 1, 1202)]
        assert received == expected


async def finish_run(dsn: str, run_id: uuid.UUID) -> tuple[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        event_id, seq = await event_queries.publish_event(
            conn, run_id, "run_completed", status="succeeded"
        )
    finally:
        await conn.close()
    return format_id(EVENT_PREFIX, event_id), seq


async def test_live_a_held_transaction_delays_later_writers_not_the_order(
    live_server: LiveServer,
    migrated_database_url: str,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish: Publish,
) -> None:
    """T1 inserts X and holds its transaction; T2 inserts Y and commits; T1
    commits later. Clients see X then Y, once each, tailing or resuming."""
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    await publish(run_id, "run_enqueued")
    dsn = to_asyncpg_dsn(migrated_database_url)
    first_writer = await asyncpg.connect(dsn)
    second_writer = await asyncpg.connect(dsn)
    url = live_server.events_url(run_typeid(run_id))

    async with open_stream(url, tenant.key) as reader:
        first_seen = await reader.next_event()
        transaction = first_writer.transaction()
        await transaction.start()
        await event_queries.publish_event(
            first_writer, run_id, "run_started", status="running"
        )
        second = asyncio.create_task(
            event_queries.publish_event(
                second_writer, run_id, "phase_changed", phase="y"
            )
        )
        await wait_until_blocked(first_writer, second_writer)
        await transaction.commit()
        await second
        tailed = [await reader.next_event(), await reader.next_event()]
    await first_writer.close()
    await second_writer.close()
    assert first_seen is not None
    resumed = await read_until_count(url, tenant.key, first_seen["id"], 2)

    assert [event and event["type"] for event in tailed] == [
        "run_started",
        "phase_changed",
    ]
    assert [event["type"] for event in resumed] == ["run_started", "phase_changed"]


async def wait_until_blocked(holder: asyncpg.Connection, waiter: Any) -> None:
    """Poll until the waiter's backend waits on a lock the holder keeps."""
    waiter_pid = waiter.get_server_pid()
    async with asyncio.timeout(10):
        while True:
            blocked_by = await holder.fetchval(
                "SELECT pg_blocking_pids($1)", waiter_pid
            )
            if holder.get_server_pid() in blocked_by:
                return
            await asyncio.sleep(0.01)


async def read_until_count(
    url: str, key: str, cursor: str, count: int
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with open_stream(url, key, headers={"Last-Event-ID": cursor}) as reader:
        while len(events) < count:
            event = await reader.next_event()
            assert event is not None
            events.append(event)
    return events


async def test_live_listener_killed_during_writes_loses_nothing(
    isolated_server: IsolatedServer,
) -> None:
    """pg_terminate_backend on the listening session: events committed while
    it is gone arrive after it reconnects, once each, in order."""
    server, dsn = await isolated_server(listener_check_seconds=1)
    admin = await asyncpg.connect(dsn)
    tenant, run_id = await seed_run(admin)
    url = server.events_url(run_typeid(run_id))

    async with open_stream(url, tenant, read_timeout=20) as reader:
        await event_queries.publish_event(
            admin, run_id, "run_enqueued", status="queued"
        )
        assert (await reader.next_event() or {}).get("type") == "run_enqueued"
        old_listener = await listener_pid(admin)
        await admin.execute("SELECT pg_terminate_backend($1)", old_listener)
        for phase in ("during-1", "during-2"):
            await event_queries.publish_event(
                admin, run_id, "phase_changed", phase=phase
            )
        await wait_for_new_listener(admin, old_listener)
        for phase in ("after-1", "after-2", "after-3"):
            await event_queries.publish_event(
                admin, run_id, "phase_changed", phase=phase
            )
        await event_queries.publish_event(admin, run_id, "run_failed", status="failed")
        rest = await reader.read_to_end()
    await admin.close()

    assert [event.get("phase") for event in rest] == [
        "during-1",
        "during-2",
        "after-1",
        "after-2",
        "after-3",
        None,
    ]


async def listener_pid(conn: asyncpg.Connection) -> int:
    pid: int = await conn.fetchval(
        """
        SELECT pid FROM pg_stat_activity
        WHERE application_name = 'selftune-events-listener'
          AND datname = current_database()
        """
    )
    return pid


async def wait_for_new_listener(conn: asyncpg.Connection, old_pid: int) -> None:
    async with asyncio.timeout(15):
        while (pid := await listener_pid(conn)) is None or pid == old_pid:
            await asyncio.sleep(0.05)


async def test_live_sessions_stay_within_the_pool_plus_one_listener(
    isolated_server: IsolatedServer,
) -> None:
    """Fifty streams opened and dropped, some mid-replay: the process never
    holds more than its pool and its one listener, and releases every feed."""
    server, dsn = await isolated_server(database_pool_size=3, replay_page_size=5)
    admin = await asyncpg.connect(dsn)
    key, run_id = await seed_run(admin)
    for index in range(60):
        await event_queries.publish_event(
            admin, run_id, "phase_changed", phase=f"p{index}"
        )
    url = server.events_url(run_typeid(run_id))

    async def open_and_drop(frames: int) -> None:
        async with open_stream(url, key) as reader:
            for _ in range(frames):
                await reader.next_frame()

    await asyncio.gather(*(open_and_drop(index % 7) for index in range(50)))
    sessions = await admin.fetch(
        """
        SELECT application_name, count(*) AS n FROM pg_stat_activity
        WHERE datname = current_database() AND application_name LIKE 'selftune-events%'
        GROUP BY application_name
        """
    )
    await admin.close()

    counts = {row["application_name"]: row["n"] for row in sessions}
    assert counts.get("selftune-events-listener") == 1
    assert counts.get("selftune-events", 0) <= 3


async def test_live_no_ping_while_events_keep_coming(
    tight_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish: Publish,
) -> None:
    """Heartbeats fill silence only: events closer together than the
    heartbeat (0.3 s here) leave no room for a `: ping` between them."""
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    comments: list[str] = []

    async with open_stream(
        tight_server.events_url(run_typeid(run_id)), tenant.key
    ) as reader:
        await reader.next_frame()
        for index in range(8):
            await publish(run_id, "phase_changed", phase=f"p{index}")
            frame = await reader.next_frame()
            assert frame is not None
            comments += frame.comments
            await asyncio.sleep(0.1)
        await publish(run_id, "run_cancelled")
        rest = await reader.read_to_end()

    assert comments == []
    assert [event["type"] for event in rest] == ["run_cancelled"]
