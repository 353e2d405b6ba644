"""The service as users and operators meet it: `curl -N`, and `serve` under SIGTERM."""

import asyncio
import shutil
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from app.db import events as event_queries
from app.db.engine import to_asyncpg_dsn
from app.ids import EVENT_PREFIX, format_id
from tests.fixtures.factories import MakeRun, MakeTenant, Publish, run_typeid, seed_run
from tests.fixtures.server import (
    LiveServer,
    ServeProcess,
    run_serve_process,
    start_live_server,
)
from tests.fixtures.sse import open_stream, read_all_events

CURL = shutil.which("curl")
SERVE_START_SECONDS = 30.0


def curl_command(url: str, key: str) -> list[str]:
    assert CURL is not None
    return [
        CURL,
        "-N",
        "-sS",
        "--max-time",
        "30",
        "-H",
        f"Authorization: Bearer {key}",
        url,
    ]


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
async def test_curl_follows_a_live_run_and_exits_cleanly_at_its_end(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish: Publish,
) -> None:
    """The README's command: events arrive live and curl exits 0 after the
    terminal event, with no "transfer closed with outstanding data"."""
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    first = await publish(run_id, "run_enqueued")
    curl = await asyncio.create_subprocess_exec(
        *curl_command(live_server.events_url(run_typeid(run_id)), tenant.key),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert curl.stdout is not None

    seen_first = await read_line_containing(curl.stdout, first.typeid)
    later = [
        await publish(run_id, "run_started"),
        await publish(run_id, "run_completed", status="succeeded"),
    ]
    stdout, stderr = await asyncio.wait_for(curl.communicate(), timeout=30)

    assert seen_first
    assert curl.returncode == 0, stderr
    assert stderr == b""
    for event in later:
        assert f"id: {event.typeid}".encode() in stdout
    assert stdout.endswith(b"\n\n")


async def read_line_containing(stream: asyncio.StreamReader, text: str) -> bool:
    async with asyncio.timeout(15):
        while line := await stream.readline():
            if text.encode() in line:
                return True
    return False


@pytest.fixture
async def serve_process(
    own_database: Callable[[], Awaitable[str]],
) -> AsyncIterator[tuple[ServeProcess, str]]:
    database_url = await own_database()
    async with run_serve_process(database_url, HEARTBEAT_SECONDS="5") as process:
        yield process, database_url


async def test_sigterm_ends_streams_at_once_and_they_resume_elsewhere(
    serve_process: tuple[ServeProcess, str],
) -> None:
    """Clients see a clean end as soon as SIGTERM arrives, the process exits
    within its grace period, its listener session is gone, and each client
    resumes on another instance with nothing missing or repeated."""
    serve, database_url = serve_process
    process, base_url = serve.process, serve.base_url
    admin = await asyncpg.connect(to_asyncpg_dsn(database_url))
    seeded = [await seed_run(admin) for _ in range(5)]
    for _key, run_id in seeded:
        await event_queries.publish_event(
            admin, run_id, "run_enqueued", status="queued"
        )
    started = asyncio.Semaphore(0)

    async def follow_until_shutdown(key: str, run_id: uuid.UUID) -> list[str]:
        url = f"{base_url}/api/v1/improve-runs/{run_typeid(run_id)}/events"
        async with open_stream(url, key) as reader:
            first = await reader.next_event()
            assert first is not None
            started.release()
            rest = await reader.read_to_end()
        return [first["id"], *(event["id"] for event in rest)]

    followers = [
        asyncio.create_task(follow_until_shutdown(key, run_id))
        for key, run_id in seeded
    ]
    for _ in seeded:
        await started.acquire()
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    received = await asyncio.wait_for(asyncio.gather(*followers), timeout=10)
    drained_seconds = time.monotonic() - signalled
    exit_code = await asyncio.to_thread(process.wait, 15)
    listeners = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE application_name = 'selftune-events-listener'"
        " AND datname = current_database()"
    )
    terminals = [
        await event_queries.publish_event(
            admin, run_id, "run_cancelled", status="cancelled"
        )
        for _key, run_id in seeded
    ]
    with start_live_server(database_url) as other_instance:
        resumed = [
            await read_all_events(
                other_instance.events_url(run_typeid(run_id)),
                key,
                headers={"Last-Event-ID": ids[-1]},
            )
            for (key, run_id), ids in zip(seeded, received, strict=True)
        ]
    await admin.close()

    assert drained_seconds < 3
    # uvicorn re-raises the signal after its graceful shutdown, so that
    # supervisors see the process end by SIGTERM.
    assert exit_code in (0, -signal.SIGTERM)
    assert "service.stopped" in serve.logs()
    assert listeners == 0
    for ids in received:
        assert len(ids) == 1
    for events, (terminal_id, _seq) in zip(resumed, terminals, strict=True):
        assert [event["id"] for event in events] == [
            format_id(EVENT_PREFIX, terminal_id)
        ]
