"""The system under soak: a throwaway database and `serve` processes we can stop."""

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psutil

from app.db.engine import create_engine
from app.db.migrate import upgrade_to_head
from tests.fixtures.postgres import throwaway_database
from tests.fixtures.server import find_free_port

# Short intervals so that faults are noticed and recovered from many times
# over a few minutes: a stuck send is dropped after 3 s, a dead listener is
# noticed within 2 s, and clients come back after 0.5 s. A live buffer of 50
# events makes a slow client overflow within seconds and catch up from the
# database; loopback's socket buffers hold megabytes, so send timeouts need
# more data than a soak writes (tests/streaming/test_slow_clients.py has them).
SERVE_ENVIRONMENT = {
    "HEARTBEAT_SECONDS": "2",
    "SEND_TIMEOUT_SECONDS": "3",
    "LISTENER_CHECK_SECONDS": "1",
    "RETRY_MS": "500",
    "STREAM_BUFFER_EVENTS": "50",
    "LOG_LEVEL": "info",
}
READY_TIMEOUT_SECONDS = 60.0
# serve's own graceful-shutdown timeout is 10 s; past this it hung.
GRACE_SECONDS = 15.0


@contextlib.asynccontextmanager
async def soak_database(server_url: str | None) -> AsyncIterator[str]:
    """A migrated database of the soak's own, dropped at the end.

    Without `server_url`, an embedded PostgreSQL in a temporary folder.
    """
    with throwaway_database(server_url) as url:
        engine = create_engine(url, pool_size=1)
        await upgrade_to_head(engine)
        await engine.dispose()
        yield url


class Instance:
    """One `selftune-events serve` process on a fixed port, restartable."""

    def __init__(self, name: str, database_url: str, folder: Path) -> None:
        self.name = name
        self.database_url = database_url
        self.port = find_free_port()
        self.log_path = folder / f"serve-{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def start(self) -> None:
        environment = {
            **os.environ,
            **SERVE_ENVIRONMENT,
            "DATABASE_URL": self.database_url,
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli.main", "serve"]
                + ["--port", str(self.port)],
                env=environment,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        await self.wait_until_ready()
        self.starts += 1

    async def wait_until_ready(self) -> None:
        async with (
            asyncio.timeout(READY_TIMEOUT_SECONDS),
            httpx.AsyncClient(timeout=2) as client,
        ):
            while True:
                if not self.is_running():
                    raise RuntimeError(f"serve {self.name} exited at start")
                with contextlib.suppress(httpx.TransportError):
                    response = await client.get(f"{self.base_url}/readyz")
                    if response.status_code == 200:
                        return
                await asyncio.sleep(0.1)

    async def terminate(self) -> float:
        """SIGTERM and wait for the exit; the seconds it took.

        Raises:
            TimeoutError: it outlived GRACE_SECONDS (it is then killed).
        """
        process = self.process
        if process is None or process.poll() is not None:
            return 0.0
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(f"serve {self.name} ignored SIGTERM") from None
        return time.monotonic() - started

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def rss_megabytes(self) -> float | None:
        if self.process is None or not self.is_running():
            return None
        try:
            rss: int = psutil.Process(self.process.pid).memory_info().rss
        except psutil.NoSuchProcess:
            return None
        return rss / 1024 / 1024

    async def read_counters(self, names: tuple[str, ...]) -> dict[str, int]:
        """Prometheus samples of these metrics, since this process started."""
        if not self.is_running():
            return {}
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(f"{self.base_url}/metrics")
        samples = {}
        for line in response.text.splitlines():
            name, _, value = line.rpartition(" ")
            if name.startswith(names):
                samples[name] = int(float(value))
        return samples

    def count_log_lines(self, event: str) -> int:
        return self.log_path.read_text(errors="replace").count(f": {event}")
