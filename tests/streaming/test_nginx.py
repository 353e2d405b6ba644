"""Two `serve` instances behind nginx, configured as deploy/nginx.conf recommends."""

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest

from app.db import events as event_queries
from app.db.engine import to_asyncpg_dsn
from app.ids import EVENT_PREFIX, format_id
from tests.fixtures.factories import run_typeid, seed_run
from tests.fixtures.instance import Instance
from tests.fixtures.nginx import Nginx, find_nginx, run_nginx
from tests.fixtures.sse import open_stream

logger = logging.getLogger(__name__)

T = TypeVar("T")

pytestmark = pytest.mark.skipif(
    find_nginx() is None and not os.environ.get("CI"),
    reason="nginx is not installed (apt-get install nginx); CI installs it",
)

MAX_LATENCY_SECONDS = 0.5
# Past this an event counts as held back, and the test moves on to say so.
EVENT_WAIT_SECONDS = 3.0
LATENCY_EVENTS = 10
# About 200 bytes on the wire, as a typical phase event is.
SMALL_PAYLOAD = {"note": "x" * 120}

RUNS = 10
STREAMS_PER_RUN = 3
# Each fault comes after this many more commits per run.
EVENTS_BETWEEN_FAULTS = 3
MAX_EVENTS_PER_WRITER = 400
# A client that needs more connections than this is reconnecting in a loop.
MAX_CONNECTIONS_PER_CLIENT = 6
# serve's graceful-shutdown timeout (app/cli/server.py) plus a margin.
GRACE_SECONDS = 15


@dataclass(frozen=True)
class Deployment:
    nginx: Nginx
    instances: tuple[Instance, Instance]
    dsn: str


@pytest.fixture
async def deployment(
    own_database: Callable[[], Awaitable[str]], tmp_path: Path
) -> AsyncIterator[Deployment]:
    """nginx in front of two `serve` processes on one database, each on a
    port of its own that it keeps across restarts."""
    if find_nginx() is None:
        pytest.fail("CI is set but nginx is not installed: .ci/run installs it")
    database_url = await own_database()
    instances = (
        Instance("a", database_url, tmp_path, {"HEARTBEAT_SECONDS": "2"}),
        Instance("b", database_url, tmp_path, {"HEARTBEAT_SECONDS": "2"}),
    )

    try:
        await asyncio.gather(*(instance.start() for instance in instances))
        with run_nginx([instance.port for instance in instances]) as nginx:
            yield Deployment(nginx, instances, to_asyncpg_dsn(database_url))
    finally:
        for instance in instances:
            instance.kill()


async def test_nginx_passes_each_event_on_at_once_and_uncompressed(
    deployment: Deployment,
) -> None:
    """A client that accepts gzip and br gets an identity-coded, chunked
    stream, and every event within half a second of its commit."""
    admin = await asyncpg.connect(deployment.dsn)
    key, run_id = await seed_run(admin)
    url = deployment.nginx.events_url(run_typeid(run_id))
    latencies: list[float] = []
    received: list[str | None] = []
    published: list[str] = []

    async with open_stream(url, key, headers={"Accept-Encoding": "gzip, br"}) as reader:
        headers = reader.response.headers
        opened = await within(EVENT_WAIT_SECONDS, reader.next_frame())
        for index in range(LATENCY_EVENTS):
            committing = time.monotonic()
            event_id, _seq = await event_queries.publish_event(
                admin,
                run_id,
                "phase_changed",
                phase=f"step-{index}",
                payload=SMALL_PAYLOAD,
            )
            event = await within(EVENT_WAIT_SECONDS, reader.next_event())
            latencies.append(time.monotonic() - committing)
            received.append(None if event is None else event["id"])
            published.append(format_id(EVENT_PREFIX, event_id))
    await admin.close()
    # The test log shows what was measured (pytest --log-cli-level=INFO).
    logger.info(
        "nginx.latency latencies_ms=%s",
        [round(seconds * 1000) for seconds in latencies],
    )

    assert opened is not None
    assert "content-length" not in headers
    assert "content-encoding" not in headers
    assert headers["content-type"].startswith("text/event-stream")
    assert received == published
    assert max(latencies) < MAX_LATENCY_SECONDS, latencies


async def within(seconds: float, awaitable: Awaitable[T]) -> T | None:
    """What `awaitable` gives, or None if it takes longer than `seconds`:
    a held-back frame fails the assertions below instead of hanging."""
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except TimeoutError:
        return None


@dataclass
class Follower:
    """One client that follows a run to its end, resuming with Last-Event-ID."""

    url: str
    key: str
    ids: list[str]
    connections: int = 0

    async def follow(self, first_event: asyncio.Semaphore) -> None:
        while self.connections < MAX_CONNECTIONS_PER_CLIENT:
            self.connections += 1
            cursor = {"Last-Event-ID": self.ids[-1]} if self.ids else {}
            async with open_stream(self.url, self.key, headers=cursor) as reader:
                while (event := await reader.next_event()) is not None:
                    self.ids.append(event["id"])
                    if len(self.ids) == 1:
                        first_event.release()
                    if event["type"] in event_queries.TERMINAL_TYPES:
                        return
        raise AssertionError(f"no end after {self.connections} connections")


async def write_phases(
    dsn: str, run_id: uuid.UUID, committed: asyncio.Semaphore, stop: asyncio.Event
) -> None:
    """Commit phase events at a few per second, as a runtime does, until
    `stop` (or MAX_EVENTS_PER_WRITER)."""
    conn = await asyncpg.connect(dsn)
    try:
        for index in range(MAX_EVENTS_PER_WRITER):
            if stop.is_set():
                return
            await event_queries.publish_event(
                conn, run_id, "phase_changed", phase=f"step-{index}"
            )
            committed.release()
            # Pacing, not waiting: the writes spread over the restarts.
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def wait_for_commits(committed: asyncio.Semaphore, count: int) -> None:
    for _ in range(count):
        await asyncio.wait_for(committed.acquire(), timeout=20)


async def test_nginx_restarts_one_instance_then_stops_the_other_losing_nothing(
    deployment: Deployment,
) -> None:
    """Thirty streams through nginx while writers commit. Instance b gets
    SIGTERM and starts again, then instance a gets SIGTERM. Each exits within
    its grace period; every reconnect through nginx is answered by a stream
    (never a 502), and every client ends with exactly its run's committed
    events, in order.

    With `max_fails=1`, nginx kept b marked failed after its restart, since
    no request to it ended (streams last), and answered the reconnects from
    a with 502 "no live upstreams"."""
    admin = await asyncpg.connect(deployment.dsn)
    seeded = [await seed_run(admin) for _ in range(RUNS)]
    for _key, run_id in seeded:
        await event_queries.publish_event(
            admin, run_id, "run_enqueued", status="queued"
        )
    followers = [
        Follower(deployment.nginx.events_url(run_typeid(run_id)), key, [])
        for key, run_id in seeded
        for _ in range(STREAMS_PER_RUN)
    ]
    first_event = asyncio.Semaphore(0)
    following = [
        asyncio.create_task(follower.follow(first_event)) for follower in followers
    ]
    for _ in followers:
        await asyncio.wait_for(first_event.acquire(), timeout=20)
    committed, stop_writing = asyncio.Semaphore(0), asyncio.Event()
    writers = [
        asyncio.create_task(
            write_phases(deployment.dsn, run_id, committed, stop_writing)
        )
        for _key, run_id in seeded
    ]
    first, second = deployment.instances

    await wait_for_commits(committed, RUNS * EVENTS_BETWEEN_FAULTS)
    exit_seconds = [await second.terminate()]
    await second.start()
    await wait_for_commits(committed, RUNS * EVENTS_BETWEEN_FAULTS)
    exit_seconds.append(await first.terminate())
    await wait_for_commits(committed, RUNS * EVENTS_BETWEEN_FAULTS)
    stop_writing.set()
    await asyncio.wait_for(asyncio.gather(*writers), timeout=30)
    for _key, run_id in seeded:
        await event_queries.publish_event(
            admin, run_id, "run_completed", status="succeeded"
        )
    await asyncio.wait_for(asyncio.gather(*following), timeout=30)
    expected = {
        run_typeid(run_id): [
            format_id(EVENT_PREFIX, row["id"])
            for row in await admin.fetch(
                "SELECT id FROM run_events WHERE run_id = $1 ORDER BY seq", run_id
            )
        ]
        for _key, run_id in seeded
    }
    await admin.close()
    resumed = sum(follower.connections > 1 for follower in followers)
    logger.info(
        "nginx.restarts clients_resumed=%d exit_seconds=%s", resumed, exit_seconds
    )

    assert max(exit_seconds) < GRACE_SECONDS
    assert resumed > 0
    for follower in followers:
        run = follower.url.split("/")[-2]
        assert follower.ids == expected[run]
    for run_ids in expected.values():
        assert len(run_ids) >= 2 + 3 * EVENTS_BETWEEN_FAULTS
