"""`dev` as a user runs it: a real process, read from stdout, stopped by a signal."""

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from app.db import runs as run_queries
from app.ids import parse_run_id
from tests.cli.conftest import Cli, error_line
from tests.fixtures.server import find_free_port

COMMAND = str(Path(sys.executable).parent / "selftune-events")
# The first start of an embedded PostgreSQL runs initdb, which takes seconds.
READY_TIMEOUT_SECONDS = 90.0
STREAM_TIMEOUT_SECONDS = 30.0
SHUTDOWN_TIMEOUT_SECONDS = 30.0

CURL_LINE = re.compile(
    r"curl -N -H 'Authorization: Bearer (?P<key>st_test_\S+)' "
    r"(?P<url>http://127\.0\.0\.1:\d+/api/v1/improve-runs/(?P<run>run_\w+)/events)"
)


@dataclass(frozen=True)
class Ready:
    key: str
    url: str
    run: str


@dataclass(frozen=True)
class DevProcess:
    process: asyncio.subprocess.Process
    stderr: asyncio.Task[str]

    async def stop(self, signum: int) -> tuple[int, str]:
        """Send `signum`; the exit code and everything dev wrote on stderr."""
        self.process.send_signal(signum)
        async with asyncio.timeout(SHUTDOWN_TIMEOUT_SECONDS):
            returncode = await self.process.wait()
            return returncode, await self.stderr


async def test_dev_serves_the_demo_run_and_stops_on_sigint_twice_in_a_row(
    tmp_path: Path,
) -> None:
    """Without DATABASE_URL, dev runs an embedded PostgreSQL under the current
    folder; a second run must find it again and start cleanly."""
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}

    for _ in range(2):
        async with start_dev(env, tmp_path) as dev:
            ready = await read_ready(dev.process)
            types = await read_stream_types(ready)

            returncode, log = await dev.stop(signal.SIGINT)

        assert types[0] == "run_enqueued"
        assert types[-1] == "run_completed"
        assert returncode == 0, log
        assert "Traceback" not in log
        assert "embedded_postgres.stopped" in log
        assert (tmp_path / ".selftune" / "pgdata" / "PG_VERSION").exists()


async def test_dev_uses_database_url_and_stops_on_sigterm(
    migrated_database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    env = {**os.environ, "DATABASE_URL": migrated_database_url}

    async with start_dev(env, tmp_path) as dev:
        ready = await read_ready(dev.process)

        returncode, log = await dev.stop(signal.SIGTERM)

    run_id = parse_run_id(ready.run)
    assert run_id is not None
    assert await run_queries.get_run(db, run_id) is not None
    assert returncode == 0, log
    assert "Traceback" not in log
    assert not (tmp_path / ".selftune").exists()


async def test_dev_busy_port_exits_with_one_line(cli: Cli) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = await cli.run("dev", "--port", str(port), DATABASE_URL=None)

    assert "choose another --port" in error_line(result)


@contextlib.asynccontextmanager
async def start_dev(env: dict[str, str], cwd: Path) -> AsyncIterator[DevProcess]:
    """Run `selftune-events dev` in `cwd`; kill it if the test fails, and add
    what it logged to the failure."""
    process = await asyncio.create_subprocess_exec(
        COMMAND,
        "dev",
        "--port",
        str(find_free_port()),
        "--speed",
        "30",
        env={**env, "LOG_LEVEL": "info"},
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stderr = asyncio.create_task(read_all(process.stderr))
    try:
        yield DevProcess(process, stderr)
    except BaseException as exc:
        await kill_if_running(process)
        exc.add_note("dev's stderr:\n" + await stderr)
        raise
    finally:
        await kill_if_running(process)


async def read_ready(process: asyncio.subprocess.Process) -> Ready:
    """Read stdout up to the curl line: dev prints it once it is serving."""
    assert process.stdout is not None
    lines = []
    async with asyncio.timeout(READY_TIMEOUT_SECONDS):
        while line := (await process.stdout.readline()).decode():
            lines.append(line)
            found = CURL_LINE.fullmatch(line.strip())
            if found is not None:
                assert f"API key: {found['key']}\n" in lines
                return Ready(found["key"], found["url"], found["run"])
    pytest.fail(f"dev exited ({process.returncode}) without a curl line: {lines}")


async def read_stream_types(ready: Ready) -> list[str]:
    """The event types of the demo run's stream, which ends with the run."""
    types = []
    headers = {"Authorization": f"Bearer {ready.key}"}
    async with (
        httpx.AsyncClient(timeout=STREAM_TIMEOUT_SECONDS) as client,
        client.stream("GET", ready.url, headers=headers) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                types.append(line.removeprefix("event: "))
    return types


async def kill_if_running(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
        await process.wait()


async def read_all(stream: asyncio.StreamReader | None) -> str:
    assert stream is not None
    return (await stream.read()).decode()
