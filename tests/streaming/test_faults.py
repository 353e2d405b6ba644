"""Faults injected for real: a silent network to PostgreSQL, a PostgreSQL restart."""

import asyncio
import contextlib
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import httpx
from pgserver import _commands

from app.db import events as event_queries
from app.db.embedded import start_embedded_postgres
from app.db.engine import create_engine, to_asyncpg_dsn
from app.db.migrate import upgrade_to_head
from tests.fixtures.factories import run_typeid, seed_run
from tests.fixtures.proxy import start_proxy
from tests.fixtures.server import LiveServer, start_live_server
from tests.fixtures.sse import StreamReader, auth, open_stream

RECOVERY_SECONDS = 20.0


async def wait_for_readiness(server: LiveServer, ready: bool) -> None:
    """Poll /readyz until it says `ready`, within RECOVERY_SECONDS."""
    wanted = 200 if ready else 503
    async with asyncio.timeout(RECOVERY_SECONDS), httpx.AsyncClient() as client:
        while (await client.get(f"{server.base_url}/readyz")).status_code != wanted:
            await asyncio.sleep(0.05)


async def next_phases(reader: StreamReader, count: int) -> list[str | None]:
    phases = []
    for _ in range(count):
        event = await reader.next_event()
        assert event is not None
        phases.append(event.get("phase"))
    return phases


async def test_half_open_database_connection_is_noticed_and_recovered(
    own_database: Callable[[], Awaitable[str]],
) -> None:
    """Packets to PostgreSQL vanish with no reset: the listener's probe
    notices within its check interval, readiness drops, and once the path
    is back every event committed meanwhile reaches the open stream once."""
    database_url = await own_database()
    admin = await asyncpg.connect(to_asyncpg_dsn(database_url))
    key, run_id = await seed_run(admin)

    with (
        start_proxy(database_url) as proxy,
        start_live_server(
            proxy.url(), listener_check_seconds=0.5, heartbeat_seconds=1
        ) as server,
    ):
        url = server.events_url(run_typeid(run_id))
        async with open_stream(url, key, read_timeout=RECOVERY_SECONDS) as reader:
            await event_queries.publish_event(admin, run_id, "phase_changed", phase="a")
            before = await next_phases(reader, 1)
            proxy.blackhole()
            await wait_for_readiness(server, ready=False)
            for phase in ("b", "c", "d"):
                await event_queries.publish_event(
                    admin, run_id, "phase_changed", phase=phase
                )
            proxy.restore()
            await wait_for_readiness(server, ready=True)
            await event_queries.publish_event(admin, run_id, "phase_changed", phase="e")
            after = await next_phases(reader, 4)
    await admin.close()

    assert before == ["a"]
    assert after == ["b", "c", "d", "e"]


@contextlib.asynccontextmanager
async def restartable_postgres() -> AsyncIterator[tuple[str, Callable[[], None]]]:
    """An embedded cluster of this test's own, and a function that restarts it."""
    folder = tempfile.mkdtemp(prefix="selftune-restart-pg-")
    try:
        with start_embedded_postgres(folder) as url:
            engine = create_engine(url, pool_size=1)
            await upgrade_to_head(engine)
            await engine.dispose()
            yield url, lambda: restart_cluster(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def restart_cluster(folder: str) -> None:
    """`pg_ctl restart`, run as the user pgserver runs PostgreSQL as."""
    pg_ctl = str(_commands.POSTGRES_BIN_PATH / "pg_ctl")
    owner = _owner_of(folder)
    log = f"{folder}/restart.log"
    command = [pg_ctl, "-D", folder, "-l", log, "-w", "-m", "fast", "restart"]
    if owner != "root":
        command = ["su", owner, "-s", "/bin/sh", "-c", " ".join(command)]
    # The new postmaster inherits our stdio: point it at nothing, or run()
    # would wait for it to exit.
    subprocess.run(
        command,
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=60,
    )


def _owner_of(folder: str) -> str:
    return pwd.getpwuid(Path(folder).stat().st_uid).pw_name


async def test_postgres_restart_loses_nothing_without_a_service_restart() -> None:
    """PostgreSQL restarts under an open stream: the listener comes back by
    itself and the stream gets every event, once, in order."""
    async with restartable_postgres() as (database_url, restart):
        admin = await asyncpg.connect(to_asyncpg_dsn(database_url))
        key, run_id = await seed_run(admin)
        await admin.close()

        with start_live_server(
            database_url, listener_check_seconds=0.5, heartbeat_seconds=1
        ) as server:
            url = server.events_url(run_typeid(run_id))
            async with open_stream(url, key, read_timeout=RECOVERY_SECONDS) as reader:
                await publish_phase(database_url, run_id, "before")
                before = await next_phases(reader, 1)
                await asyncio.to_thread(restart)
                await publish_phase(database_url, run_id, "right-after")
                await wait_for_readiness(server, ready=True)
                await publish_phase(database_url, run_id, "later")
                after = await next_phases(reader, 2)

    assert before == ["before"]
    assert after == ["right-after", "later"]


async def publish_phase(database_url: str, run_id: uuid.UUID, phase: str) -> None:
    conn = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:
        await event_queries.publish_event(conn, run_id, "phase_changed", phase=phase)
    finally:
        await conn.close()


async def test_pooled_sessions_killed_while_idle_are_replaced_without_an_error(
    isolated_server: Callable[..., Awaitable[tuple[LiveServer, str]]],
) -> None:
    """Every idle query session is terminated: the pool notices at checkout
    (no ping round trip) and the next requests get fresh ones, not a 503."""
    server, dsn = await isolated_server(database_pool_size=3)
    admin = await asyncpg.connect(dsn)
    key, run_id = await seed_run(admin)
    url = server.events_url(run_typeid(run_id))
    sessions = """
        SELECT pid FROM pg_stat_activity
        WHERE datname = current_database() AND application_name = 'selftune-events'
    """

    async with httpx.AsyncClient(timeout=10) as client:

        async def open_one() -> int:
            async with client.stream("GET", url, headers=auth(key)) as response:
                return response.status_code

        async def open_many() -> list[int]:
            return list(await asyncio.gather(*(open_one() for _ in range(6))))

        warm = await open_many()
        pids = [row["pid"] for row in await admin.fetch(sessions)]
        for pid in pids:
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
        async with asyncio.timeout(RECOVERY_SECONDS):
            while set(pids) & {row["pid"] for row in await admin.fetch(sessions)}:
                await asyncio.sleep(0.02)
        after = await open_many()
    await admin.close()

    assert pids
    assert warm == [200] * 6
    assert after == [200] * 6
