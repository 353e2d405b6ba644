"""`migrate` and `serve`: what they check before they start, and a real start."""

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from sqlalchemy.engine import make_url

from app.cli import server as server_commands
from app.db.engine import to_asyncpg_dsn
from tests.cli.conftest import Cli, error_line
from tests.fixtures.server import find_free_port

COMMAND = str(Path(sys.executable).parent / "selftune-events")
STARTUP_TIMEOUT_SECONDS = 30.0
SHUTDOWN_TIMEOUT_SECONDS = 20.0


async def test_migrate_creates_the_schema_and_reports_on_stderr(
    cli: Cli, empty_database_url: str
) -> None:
    result = await cli.run("migrate", DATABASE_URL=empty_database_url, LOG_LEVEL="info")

    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert "migrate.finished revision=" in result.stderr
    conn = await asyncpg.connect(to_asyncpg_dsn(empty_database_url))
    try:
        assert await conn.fetchval("SELECT to_regclass('run_events')") is not None
    finally:
        await conn.close()


async def test_migrate_on_a_current_schema_changes_nothing(cli: Cli) -> None:
    result = await cli.run("migrate")

    assert (result.exit_code, result.stdout) == (0, ""), result.stderr


async def test_migrate_without_database_url_exits_with_one_line(cli: Cli) -> None:
    result = await cli.run("migrate", DATABASE_URL=None)

    assert "DATABASE_URL is not set" in error_line(result)


async def test_migrate_wrong_database_exits_without_waiting(
    cli: Cli, migrated_database_url: str
) -> None:
    missing = make_url(migrated_database_url).set(database="selftune_no_such_db")

    result = await cli.run(
        "migrate",
        DATABASE_URL=missing.render_as_string(hide_password=False),
        DATABASE_CONNECT_TIMEOUT="60",
    )

    assert "selftune_no_such_db" in error_line(result)


async def test_serve_without_database_url_exits_with_one_line(cli: Cli) -> None:
    result = await cli.run("serve", DATABASE_URL=None)

    assert "DATABASE_URL is not set" in error_line(result)


async def test_serve_bad_config_exits_with_one_line(cli: Cli) -> None:
    result = await cli.run("serve", RETRY_MS="-5")

    assert "RETRY_MS" in error_line(result)


async def test_serve_gives_up_on_an_unreachable_database(cli: Cli) -> None:
    unreachable = f"postgresql://postgres@127.0.0.1:{find_free_port()}/selftune"

    result = await cli.run(
        "serve",
        "--port",
        str(find_free_port()),
        DATABASE_URL=unreachable,
        DATABASE_CONNECT_TIMEOUT="0.5",
        LOG_LEVEL="error",
    )

    assert "did not answer within 0.5 s" in error_line(result)


async def test_serve_busy_port_exits_with_one_line(cli: Cli) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = await cli.run("serve", "--port", str(port))

    assert f"127.0.0.1:{port}" in error_line(result)


async def test_serve_hands_the_factory_and_its_socket_to_uvicorn(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []

    class RecordingSupervisor:
        """Stands in for uvicorn's, which installs signal handlers and so
        only runs in a main thread."""

        def __init__(
            self, config: uvicorn.Config, sockets: list[socket.socket]
        ) -> None:
            self.config, self.sockets = config, sockets

        def run(self) -> None:
            # The socket closes when serve returns: read it while it is open.
            [listening] = self.sockets
            calls.append(
                {
                    "config": self.config,
                    "bound_port": listening.getsockname()[1],
                    "user_timeout_ms": listening.getsockopt(
                        socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT
                    ),
                }
            )

    monkeypatch.setattr(server_commands, "Multiprocess", RecordingSupervisor)
    port = find_free_port()

    result = await cli.run("serve", "--port", str(port), "--workers", "3")

    assert result.exit_code == 0, result.stderr
    [call] = calls
    config = call["config"]
    assert config.app == "app.main:create_app_from_environment"
    assert config.factory is True
    assert (call["bound_port"], config.workers) == (port, 3)
    assert call["user_timeout_ms"] == 45_000
    assert config.log_config is None
    assert config.timeout_graceful_shutdown >= 5


async def test_serve_answers_then_stops_on_sigterm(migrated_database_url: str) -> None:
    port = find_free_port()
    env = {**os.environ, "DATABASE_URL": migrated_database_url, "LOG_LEVEL": "info"}
    process = await asyncio.create_subprocess_exec(
        COMMAND,
        "serve",
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stderr = asyncio.create_task(read_all(process.stderr))
    try:
        await wait_until_healthy(f"http://127.0.0.1:{port}/healthz", process)

        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(SHUTDOWN_TIMEOUT_SECONDS):
            returncode = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    # uvicorn ends by raising SIGTERM again once it has shut down, as
    # supervisors expect; either way nothing may be left half-done.
    assert returncode in (0, -signal.SIGTERM)
    log = await stderr
    assert "Traceback" not in log
    assert "service.stopped" in log
    assert await read_all(process.stdout) == ""


async def wait_until_healthy(url: str, process: asyncio.subprocess.Process) -> None:
    async with httpx.AsyncClient() as client, asyncio.timeout(STARTUP_TIMEOUT_SECONDS):
        while process.returncode is None:
            try:
                response = await client.get(url, timeout=1.0)
            except httpx.TransportError:
                # Not listening yet; ask again until the deadline.
                await asyncio.sleep(0.05)
                continue
            if response.status_code == 200:
                return
    raise AssertionError(f"serve exited with {process.returncode} before answering")


async def read_all(stream: asyncio.StreamReader | None) -> str:
    assert stream is not None
    return (await stream.read()).decode()
