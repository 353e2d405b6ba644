"""Random faults, injected for real, and the samples taken while they happen."""

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg

from app.db.engine import LISTENER_APPLICATION_NAME
from soak.clients import Client
from soak.load import pause
from tests.fixtures.instance import Instance

MONITOR_APPLICATION_NAME = "selftune-soak-monitor"

# Relative weights: cheap faults often, a restart now and then.
FAULT_WEIGHTS = {
    "listener_kill": 3,
    "client_reset": 3,
    "slow_clients": 2,
    "sigterm_restart": 1,
}
FAULT_EVERY_SECONDS = (1.0, 4.0)
# One instance always stays up, and it gets time to take the load back.
RESTART_SPACING_SECONDS = 20.0
SLOW_SECONDS = (10.0, 30.0)
SAMPLE_EVERY_SECONDS = 10.0


@dataclass
class FaultLog:
    counts: Counter[str] = field(default_factory=Counter)
    exit_seconds: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    restarting: asyncio.Task[None] | None = None
    last_restart: float = 0.0


@dataclass
class Sample:
    elapsed_seconds: float
    rss_megabytes: dict[str, float | None]
    sessions: dict[str, int]
    queue_usage: float
    frames: int


class FaultInjector:
    def __init__(
        self,
        dsn: str,
        instances: list[Instance],
        clients: list[Client],
        rng: random.Random,
    ) -> None:
        self.dsn = dsn
        self.instances = instances
        self.clients = clients
        self.rng = rng
        self.log = FaultLog()

    async def run(self, stop: asyncio.Event) -> None:
        actions: dict[str, Callable[[], Awaitable[bool]]] = {
            "listener_kill": self.listener_kill,
            "client_reset": self.client_reset,
            "slow_clients": self.slow_clients,
            "sigterm_restart": self.sigterm_restart,
        }
        kinds = list(FAULT_WEIGHTS)
        weights = list(FAULT_WEIGHTS.values())
        self.conn = await connect(self.dsn)
        try:
            while not await pause(stop, self.rng.uniform(*FAULT_EVERY_SECONDS)):
                kind = self.rng.choices(kinds, weights)[0]
                if await actions[kind]():
                    self.log.counts[kind] += 1
            if self.log.restarting is not None:
                await self.log.restarting
        finally:
            await self.conn.close()

    async def listener_kill(self) -> bool:
        """pg_terminate_backend on one instance's LISTEN session."""
        killed: bool | None = await self.conn.fetchval(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = $1 AND datname = current_database()"
            " ORDER BY random() LIMIT 1",
            LISTENER_APPLICATION_NAME,
        )
        return bool(killed)

    async def client_reset(self) -> bool:
        connected = [client for client in self.clients if client.is_connected]
        for client in self.rng.sample(connected, min(len(connected), 3)):
            client.reset()
        return bool(connected)

    async def slow_clients(self) -> bool:
        for client in self.rng.sample(self.clients, min(len(self.clients), 2)):
            client.slow_down(self.rng.uniform(*SLOW_SECONDS))
        return True

    async def sigterm_restart(self) -> bool:
        """SIGTERM one instance and start it again, in the background."""
        spacing = time.monotonic() - self.log.last_restart
        if self.log.restarting is not None or spacing < RESTART_SPACING_SECONDS:
            return False
        self.log.last_restart = time.monotonic()
        instance = self.rng.choice(self.instances)
        self.log.restarting = asyncio.create_task(self.restart(instance))
        return True

    async def restart(self, instance: Instance) -> None:
        try:
            self.log.exit_seconds.append(await instance.terminate())
        except TimeoutError:
            self.log.failures["sigterm_exit_timeout"] += 1
        try:
            await instance.start()
        except (RuntimeError, TimeoutError):
            self.log.failures["restart_failed"] += 1
        finally:
            self.log.restarting = None


async def take_sample(
    conn: asyncpg.Connection,
    instances: list[Instance],
    clients: list[Client],
    started: float,
) -> Sample:
    rows = await conn.fetch(
        "SELECT coalesce(application_name, '') AS name, count(*) AS sessions"
        " FROM pg_stat_activity WHERE datname = current_database()"
        " GROUP BY 1 ORDER BY 1"
    )
    return Sample(
        elapsed_seconds=time.monotonic() - started,
        rss_megabytes={item.name: item.rss_megabytes() for item in instances},
        sessions={row["name"]: row["sessions"] for row in rows},
        queue_usage=await conn.fetchval("SELECT pg_notification_queue_usage()"),
        frames=sum(client.frames for client in clients),
    )


async def sample_until(
    dsn: str,
    instances: list[Instance],
    clients: list[Client],
    samples: list[Sample],
    stop: asyncio.Event,
    started: float,
) -> None:
    conn = await connect(dsn)
    try:
        while True:
            samples.append(await take_sample(conn, instances, clients, started))
            if await pause(stop, SAMPLE_EVERY_SECONDS):
                return
    finally:
        await conn.close()


async def connect(dsn: str) -> asyncpg.Connection:
    """A session of the soak's own; each task has one, as asyncpg requires."""
    conn: asyncpg.Connection = await asyncpg.connect(
        dsn, server_settings={"application_name": MONITOR_APPLICATION_NAME}
    )
    return conn
