"""Heartbeats and the cost of a stream, with one supervisor task per process."""

import asyncio
import contextlib
import time
from collections.abc import Iterator

import pytest

from tests.fixtures.factories import MakeRun, MakeTenant, Publish, run_typeid
from tests.fixtures.server import LiveServer, start_live_server
from tests.fixtures.sse import StreamReader, open_stream

HEARTBEAT_SECONDS = 0.4


@pytest.fixture(scope="module")
def heartbeat_server(migrated_database_url: str) -> Iterator[LiveServer]:
    with start_live_server(
        migrated_database_url, heartbeat_seconds=HEARTBEAT_SECONDS
    ) as server:
        yield server


async def next_ping_at(reader: StreamReader) -> float:
    frame = await reader.next_frame()
    assert frame is not None
    assert frame.comments == ["ping"], frame
    return time.monotonic()


async def test_a_heartbeat_follows_each_idle_interval_never_sooner(
    heartbeat_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish: Publish,
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)

    async with open_stream(
        heartbeat_server.events_url(run_typeid(run_id)), tenant.key, read_timeout=5
    ) as reader:
        await reader.next_frame()
        written_at = time.monotonic()
        pings = [await next_ping_at(reader) for _ in range(3)]

        await publish(run_id, "phase_changed", phase="scoring")
        event = await reader.next_event()
        event_at = time.monotonic()
        ping_after_event = await next_ping_at(reader)

    assert event is not None
    assert event["phase"] == "scoring"
    starts = [written_at, *pings[:-1]]
    gaps = [ping - start for start, ping in zip(starts, pings, strict=True)]
    # Never early: the idle clock restarts with every write. The upper bound
    # is loose, for a shared machine; the supervisor ticks at 1/8 interval.
    for gap in [*gaps, ping_after_event - event_at]:
        assert HEARTBEAT_SECONDS * 0.9 <= gap < HEARTBEAT_SECONDS + 1.0, gaps


async def count_tasks(server: LiveServer) -> int:
    """Tasks on the server's event loop, counted from inside that loop."""
    loop = server.server.servers[0].get_loop()

    async def count() -> int:
        return len(asyncio.all_tasks())

    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(count(), loop))


async def test_an_open_stream_costs_two_tasks_and_no_task_group(
    heartbeat_server: LiveServer, make_tenant: MakeTenant, make_run: MakeRun
) -> None:
    """The request's own task writes and one task waits for the disconnect;
    heartbeats, send deadlines and shutdown belong to one task per process.
    sse-starlette's stock response runs four (five with its ping) per stream."""
    streams = 40
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    url = heartbeat_server.events_url(run_typeid(run_id))
    before = await count_tasks(heartbeat_server)

    async with contextlib.AsyncExitStack() as stack:
        readers = [
            await stack.enter_async_context(open_stream(url, tenant.key))
            for _ in range(streams)
        ]
        for reader in readers:
            await reader.next_frame()
        during = await count_tasks(heartbeat_server)

    # Two each; the margin is for the process's own short-lived tasks (a
    # feed read, the listener's probe) that may come and go meanwhile.
    per_stream = (during - before) / streams
    assert 1.9 <= per_stream < 2.5, (before, during)
