"""Two `serve` instances behind nginx, configured as deploy/nginx.conf recommends."""

import asyncio
import contextlib
import logging
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import asyncpg
import pytest

from app.db import events as event_queries
from app.db.engine import to_asyncpg_dsn
from app.ids import EVENT_PREFIX, format_id
from tests.fixtures.factories import run_typeid, seed_run
from tests.fixtures.nginx import Nginx, find_nginx, run_nginx
from tests.fixtures.server import ServeProcess, run_serve_process
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
EVENTS_PER_WRITER = 15
EVENTS_BEFORE_SIGTERM = 3
# A client that needs more connections than this is reconnecting in a loop.
MAX_CONNECTIONS_PER_CLIENT = 6
# serve's graceful-shutdown timeout (app/cli/server.py) plus a margin.
GRACE_SECONDS = 15


@dataclass(frozen=True)
class Deployment:
    nginx: Nginx
    instances: tuple[ServeProcess, ServeProcess]
    dsn: str


@pytest.fixture
async def deployment(
    own_database: Callable[[], Awaitable[str]],
) -> AsyncIterator[Deployment]:
    """nginx in front of two `serve` processes on one database."""
    if find_nginx() is None:
        pytest.fail("CI is set but nginx is not installed: .ci/run installs it")
    database_url = await own_database()

    async with contextlib.AsyncExitStack() as stack:
        instances = (
            await stack.enter_async_context(
                run_serve_process(database_url, HEARTBEAT_SECONDS="2")
            ),
            await stack.enter_async_context(
                run_serve_process(database_url, HEARTBEAT_SECONDS="2")
            ),
        )
        ports = [int(serve.base_url.rpartition(":")[2]) for serve in instances]
        nginx = stack.enter_context(run_nginx(ports))
        yield Deployment(nginx, instances, to_asyncpg_dsn(database_url))


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
    dsn: str, run_id: uuid.UUID, committed: asyncio.Semaphore
) -> None:
    """Commit phase events at a few per second, as a runtime does."""
    conn = await asyncpg.connect(dsn)
    try:
        for index in range(EVENTS_PER_WRITER):
            await event_queries.publish_event(
                conn, run_id, "phase_changed", phase=f"step-{index}"
            )
            committed.release()
            # Pacing, not waiting: the writes spread over the shutdown.
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def test_nginx_sigterm_of_one_instance_every_client_resumes_exactly(
    deployment: Deployment,
) -> None:
    """Thirty streams through nginx while writers commit; one instance gets
    SIGTERM. It exits within its grace period, its clients resume through
    nginx on the other one, and every client ends with exactly the run's
    committed events, in order."""
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

    committed = asyncio.Semaphore(0)
    writers = [
        asyncio.create_task(write_phases(deployment.dsn, run_id, committed))
        for _key, run_id in seeded
    ]
    for _ in range(RUNS * EVENTS_BEFORE_SIGTERM):
        await asyncio.wait_for(committed.acquire(), timeout=20)
    stopping = deployment.instances[0].process
    stopping.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*writers), timeout=30)
    exit_code = await asyncio.to_thread(stopping.wait, GRACE_SECONDS)
    exited_after = time.monotonic() - signalled
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
    logger.info("nginx.sigterm clients_resumed=%d", resumed)

    assert exit_code in (0, -signal.SIGTERM)
    assert exited_after < GRACE_SECONDS
    assert resumed > 0
    for follower in followers:
        run = follower.url.split("/")[-2]
        assert follower.ids == expected[run]
    for run_ids in expected.values():
        assert len(run_ids) == 2 + EVENTS_PER_WRITER
