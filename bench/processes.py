"""Server processes under test, and what /proc says about any process."""

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.wire import get_status

SERVICE = "service"
BARE = "bare"
LISTEN_PER_CLIENT = "listen-per-client"
POLLING = "polling"
SYSTEMS = (SERVICE, BARE, LISTEN_PER_CLIENT, POLLING)
DATABASE_SYSTEMS = frozenset({SERVICE, LISTEN_PER_CLIENT, POLLING})
# The application_name of each system's database sessions.
APPLICATIONS = {
    SERVICE: frozenset({"selftune-events", "selftune-events-listener"}),
    LISTEN_PER_CLIENT: frozenset({"bench-listen-per-client"}),
    POLLING: frozenset({"bench-polling"}),
    BARE: frozenset(),
}

# `python -m bench...` finds the package from here, wherever the caller runs.
REPO_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 20.0
CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def read_rss_bytes(pid: int) -> int:
    """Resident set size, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def read_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, all threads, from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces; the fields after it are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_SECOND


def read_machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat."""
    fields = [
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ]
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    return total - idle, total


def find_free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    system: str
    process: asyncio.subprocess.Process
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_bytes(self) -> int:
        return read_rss_bytes(self.pid)

    def cpu_seconds(self) -> float:
        return read_cpu_seconds(self.pid)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def service_launcher() -> list[str]:
    """The `selftune-events` entry point of this environment.

    Run as a script, not with `-m`, so that the current directory does not
    come first on sys.path and PYTHONPATH can choose the tree of `app`.
    """
    script = Path(sys.executable).parent / "selftune-events"
    if not script.exists():
        raise RuntimeError(f"{script} is missing; run `uv sync` first")
    return [str(script)]


def service_environment(source: Path | None) -> dict[str, str]:
    """Environment that makes the service import `app` from `source`."""
    return {"PYTHONPATH": str(source)} if source is not None else {}


def server_command(system: str, port: int, dsn: str) -> list[str]:
    python = sys.executable
    if system == SERVICE:
        return [*service_launcher(), "serve", "--port", str(port)]
    if system == BARE:
        return [python, "-m", "bench.peers.bare", "--port", str(port)]
    if system == LISTEN_PER_CLIENT:
        module = "bench.peers.listen_per_client"
        return [python, "-m", module, "--port", str(port), "--dsn", dsn]
    if system == POLLING:
        return [python, "-m", "bench.peers.polling", "--port", str(port), "--dsn", dsn]
    raise ValueError(f"unknown system {system!r}")


async def start_server(
    system: str,
    *,
    database_url: str,
    dsn: str,
    log_dir: Path,
    environment: dict[str, str] | None = None,
    service_source: Path | None = None,
) -> Server:
    """Start one server on a free loopback port and wait until /readyz is 200."""
    port = find_free_port()
    log_path = log_dir / f"{system}-{port}.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        # One organisation opens every stream of the benchmark.
        "MAX_STREAMS_PER_ORG": "1000000",
        **(environment or {}),
    }
    cwd = REPO_ROOT
    if system == SERVICE and service_source is not None:
        env.update(service_environment(service_source))
        cwd = service_source
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *server_command(system, port, dsn),
            env=env,
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    server = Server(system, process, port, log_path)
    try:
        await wait_until_ready(server)
    except BaseException:
        await stop_server(server)
        raise
    return server


async def wait_until_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.process.returncode is not None:
            raise RuntimeError(
                f"{server.system} exited early: {server.log_text()[-2000:]}"
            )
        with contextlib.suppress(OSError, TimeoutError, ValueError, IndexError):
            if await get_status(server.port, "/readyz") == 200:
                return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{server.system} was not ready in {READY_TIMEOUT_SECONDS} s")


async def stop_server(server: Server) -> None:
    """SIGTERM, then SIGKILL if it does not exit in time; only our own child."""
    if server.process.returncode is not None:
        return
    server.process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(server.process.wait(), STOP_TIMEOUT_SECONDS)
    except TimeoutError:
        server.process.kill()
        await server.process.wait()
