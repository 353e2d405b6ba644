"""One soak: set up, load and break for the given time, drain, then count."""

import asyncio
import contextlib
import random
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import typer

from app.db import keys as key_queries
from app.db import orgs as org_queries
from app.db.engine import to_asyncpg_dsn
from app.keys import generate_key, hash_key, visible_prefix
from soak.clients import Client
from soak.cluster import SERVE_ENVIRONMENT, soak_database
from soak.faults import MONITOR_APPLICATION_NAME, FaultInjector, Sample, sample_until
from soak.load import Slot, WriteStats, end_run, rotate_runs, start_run, write_events
from soak.report import SERVER_LOG_EVENTS, Report, tally_clients
from tests.fixtures.instance import Instance
from tests.fixtures.nginx import run_nginx

# After the load stops, clients get this long to reach their runs' ends.
DRAIN_SECONDS = 60.0

# Read from both instances at the end (counted since each one's last start).
REPORTED_METRICS = ("selftune_events_sent_total{", "selftune_streams_closed_total{")

Target = Callable[[], tuple[str, int]]


@dataclass(frozen=True)
class SoakOptions:
    minutes: float
    nginx: bool
    slots: int
    clients: int
    writers_per_slot: int
    seed: int
    database_url: str | None
    keep_logs: bool = False


@dataclass
class Soak:
    """The soak's shared state: the system, its load and what was seen."""

    options: SoakOptions
    dsn: str
    admin: asyncpg.Connection
    instances: list[Instance]
    rng: random.Random
    org_id: uuid.UUID
    key: str
    slots: list[Slot] = field(default_factory=list)
    clients: list[Client] = field(default_factory=list)
    writes: WriteStats = field(default_factory=WriteStats)
    samples: list[Sample] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)

    async def prepare(self, target: Target) -> None:
        for index in range(self.options.slots):
            run_id = await start_run(self.admin, self.org_id)
            self.slots.append(Slot(index, [run_id]))
        self.clients = [
            Client(
                f"c{index}",
                self.key,
                self.slots[index % len(self.slots)],
                target,
                self.rng,
            )
            for index in range(self.options.clients)
        ]

    async def run(self) -> Report:
        """Load and break the system for the set time, then let clients finish."""
        started = time.monotonic()
        deadline = started + self.options.minutes * 60 + DRAIN_SECONDS
        stop, stop_sampling = asyncio.Event(), asyncio.Event()
        injector = FaultInjector(self.dsn, self.instances, self.clients, self.rng)
        sampler = asyncio.create_task(
            sample_until(
                self.dsn,
                self.instances,
                self.clients,
                self.samples,
                stop_sampling,
                started,
            )
        )
        followers = [
            asyncio.create_task(client.run(deadline)) for client in self.clients
        ]
        loaders = [*self.start_writers(stop), asyncio.create_task(injector.run(stop))]

        # The soak's length: a run time, not a wait for something.
        await asyncio.sleep(self.options.minutes * 60)
        stop.set()
        await asyncio.gather(*loaders)
        await self.end_every_run()
        await asyncio.wait(followers, timeout=DRAIN_SECONDS)
        for instance in self.instances:
            self.counters.update(await instance.read_counters(REPORTED_METRICS))
        stop_sampling.set()
        await sampler
        return await self.report(injector)

    def start_writers(self, stop: asyncio.Event) -> list[asyncio.Task[None]]:
        tasks = [
            asyncio.create_task(
                write_events(self.dsn, slot, self.writes, stop, self.rng)
            )
            for slot in self.slots
            for _ in range(self.options.writers_per_slot)
        ]
        rotation = rotate_runs(
            self.dsn, self.slots, self.org_id, self.writes, stop, self.rng
        )
        return [*tasks, asyncio.create_task(rotation)]

    async def end_every_run(self) -> None:
        """Bring a stopped instance back, then give every slot's run its end."""
        for instance in self.instances:
            if not instance.is_running():
                await instance.start()
        for slot in self.slots:
            await end_run(self.admin, slot, self.writes, next_run=None)

    async def report(self, injector: FaultInjector) -> Report:
        server_log: Counter[str] = Counter()
        for instance in self.instances:
            for event in SERVER_LOG_EVENTS:
                server_log[event] += instance.count_log_lines(event)
        return Report(
            minutes=self.options.minutes,
            behind_nginx=self.options.nginx,
            slots=len(self.slots),
            clients=self.clients,
            writes=self.writes,
            faults=injector.log,
            samples=self.samples,
            tally=await tally_clients(self.admin, self.clients),
            server_log=server_log,
            counters=self.counters,
        )


async def run_soak(options: SoakOptions) -> Report:
    async with soak_database(options.database_url) as url:
        admin = await asyncpg.connect(
            to_asyncpg_dsn(url),
            server_settings={"application_name": MONITOR_APPLICATION_NAME},
        )
        folder = Path(tempfile.mkdtemp(prefix="selftune-soak-"))
        if options.keep_logs:
            typer.echo(f"serve logs in {folder}", err=True)
        instances = [
            Instance(name, url, folder, SERVE_ENVIRONMENT) for name in ("a", "b")
        ]
        org_id, key = await create_tenant(admin)
        soak = Soak(
            options,
            to_asyncpg_dsn(url),
            admin,
            instances,
            random.Random(options.seed),
            org_id,
            key,
        )
        try:
            await asyncio.gather(*(instance.start() for instance in instances))
            with contextlib.ExitStack() as stack:
                await soak.prepare(choose_target(soak, stack))
                return await soak.run()
        finally:
            for instance in instances:
                await stop_instance(instance)
            await admin.close()
            if not options.keep_logs:
                shutil.rmtree(folder, ignore_errors=True)


def choose_target(soak: Soak, stack: contextlib.ExitStack) -> Target:
    """Where clients connect: nginx, or either instance at random."""
    if soak.options.nginx:
        nginx = stack.enter_context(run_nginx([item.port for item in soak.instances]))
        port = int(nginx.base_url.rpartition(":")[2])
        return lambda: ("127.0.0.1", port)
    return lambda: ("127.0.0.1", soak.rng.choice(soak.instances).port)


async def stop_instance(instance: Instance) -> None:
    with contextlib.suppress(TimeoutError):
        await instance.terminate()
    instance.kill()


async def create_tenant(conn: asyncpg.Connection) -> tuple[uuid.UUID, str]:
    org_id = await org_queries.create_org(conn, "soak")
    key = generate_key(test=True)
    await key_queries.insert_key(
        conn, org_id, prefix=visible_prefix(key), key_hash=hash_key(key)
    )
    return org_id, key
