"""What every scenario shares: the context, one measured phase, the rate search."""

import asyncio
import math
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.ids import RUN_PREFIX, format_id
from bench.database import ScratchDatabase
from bench.dbcost import WireCounter, describe_database_work
from bench.load import LoadClient
from bench.plan import Plan
from bench.processes import (
    APPLICATIONS,
    BARE,
    DATABASE_SYSTEMS,
    SERVICE,
    Server,
    read_machine_ticks,
    start_server,
)
from bench.publishers import (
    BarePublisher,
    DatabasePublisher,
    FloorListener,
    Publisher,
    publish_at_rate,
)
from bench.stats import summarise_latencies

JsonObject = dict[str, Any]

# A rate is sustained when nearly every delivery arrives within the drain
# time after the last publish and the p99 stays low; past it queues grow.
SUSTAINED_DELIVERED_FRACTION = 0.98
SUSTAINED_P99_MS = 500.0
# Past 1,000 streams one event's fan-out alone takes hundreds of ms here, so
# the bound is the drain time: the rate is sustained if queues do not grow.
SUSTAINED_P99_MS_MANY_STREAMS = 2000.0
MIN_STEP_EVENTS = 6
MIN_SEARCH_RATE = 0.5
BACKLOG_WAIT_SECONDS = 5.0
DRAIN_SECONDS = 2.0
QUIET_SECONDS = 0.3


@dataclass
class Bench:
    plan: Plan
    database: ScratchDatabase | None
    client: LoadClient
    log_dir: Path
    # Where the measured service's `app` comes from (None: the working tree).
    service_source: Path | None = None
    # The counting proxy; servers started `through_wire` reach PostgreSQL by it.
    wire: WireCounter | None = None
    notes: list[str] = field(default_factory=list)

    def require_database(self) -> ScratchDatabase:
        if self.database is None:
            raise RuntimeError("this scenario needs the scratch database")
        return self.database

    async def start(
        self,
        system: str,
        environment: dict[str, str] | None = None,
        *,
        through_wire: bool = False,
    ) -> Server:
        database = self.database
        url = database.url if database is not None else ""
        if database is not None and through_wire and self.wire is not None:
            url = database.url_through(self.wire.port)
        return await start_server(
            system,
            database_url=url,
            dsn=url,
            log_dir=self.log_dir,
            environment=environment,
            service_source=self.service_source,
        )

    def stream_path(self, system: str, run_id: uuid.UUID) -> str:
        if system == SERVICE:
            return f"/api/v1/improve-runs/{format_id(RUN_PREFIX, run_id)}/events"
        return f"/api/v1/improve-runs/{run_id}/events"

    def stream_headers(self, system: str) -> dict[str, str]:
        if system == SERVICE and self.database is not None:
            return {"Authorization": f"Bearer {self.database.key}"}
        return {}

    async def publisher(
        self, system: str, server: Server, run_ids: list[uuid.UUID], pad_bytes: int = 0
    ) -> Publisher:
        if system == BARE:
            return BarePublisher(server.port, [str(r) for r in run_ids], pad_bytes)
        database = self.require_database()
        return await DatabasePublisher.connect(database.dsn, run_ids, pad_bytes)


@dataclass
class Target:
    """A running server, its streams and the writer that feeds them."""

    bench: Bench
    server: Server
    publisher: Publisher
    streams_per_run: int
    floor: FloorListener | None = None

    @property
    def has_database(self) -> bool:
        return self.server.system in DATABASE_SYSTEMS


async def run_phase(
    target: Target,
    rate: float,
    seconds: float,
    *,
    count_database: bool = False,
) -> JsonObject:
    """Publish at `rate` for `seconds`, wait for the deliveries, measure.

    With `count_database`, snapshots of the counting proxy bracket the phase
    (the server must have been started through it). `machine_busy` is the
    share of all CPUs busy during the phase, whoever used them: on a shared
    machine it says how noisy the phase was.
    """
    client = target.bench.client
    wire = target.bench.wire if count_database else None
    # What a previous phase left in flight must not count in this one.
    await client.wait_quiet(QUIET_SECONDS, BACKLOG_WAIT_SECONDS)
    await client.window()
    before = await wire.snapshot() if wire is not None else None
    if isinstance(target.publisher, DatabasePublisher):
        target.publisher.take_sent()
    cpu_before = target.server.cpu_seconds()
    busy_before, total_before = read_machine_ticks()
    started = time.monotonic()

    published = await publish_at_rate(target.publisher, rate, seconds)
    publish_seconds = time.monotonic() - started
    expected = published * target.streams_per_run
    await client.wait_for_events(expected, DRAIN_SECONDS)
    window = await client.window()
    elapsed = time.monotonic() - started
    server_cpu = (target.server.cpu_seconds() - cpu_before) / elapsed
    busy_after, total_after = read_machine_ticks()

    delivered: int = window["events"]
    result: JsonObject = {
        "system": target.server.system,
        "rate": rate,
        "seconds": seconds,
        "published": published,
        "achieved_rate": round(published / publish_seconds, 1),
        "expected": expected,
        "delivered": delivered,
        "delivered_fraction": round(delivered / expected, 4) if expected else None,
        "deliveries_per_s": round(delivered / window["seconds"], 1),
        "mb_per_s": round(window["bytes"] / window["seconds"] / 1e6, 2),
        "events_per_write": window["events_per_write"],
        "latency_ms": window["latency_ms"],
        "first_ms": window["first_ms"],
        "spread_ms": window["spread_ms"],
        "server_cpu": round(server_cpu, 3),
        # CPU time per delivery does not grow when other work steals the
        # CPUs, unlike latency: the steadier figure on a shared machine.
        "cpu_us_per_delivery": round(server_cpu * elapsed / delivered * 1e6, 1)
        if delivered
        else None,
        "client_cpu": window["client_cpu"],
        "machine_busy": round(
            (busy_after - busy_before) / max(total_after - total_before, 1), 3
        ),
    }
    if target.floor is not None and isinstance(target.publisher, DatabasePublisher):
        sent = target.publisher.take_sent()
        result["floor_ms"] = summarise_latencies(await target.floor.latencies(sent))
    if before is not None and wire is not None:
        # Reads and deliveries are done; let stragglers (a ping, a probe) land.
        await asyncio.sleep(0.2)
        after = await wire.snapshot()
        result["db"] = describe_database_work(
            before,
            after,
            applications=APPLICATIONS[target.server.system],
            published=published,
            seconds=time.monotonic() - started,
        )
    return result


def is_sustained(phase: JsonObject, streams: int) -> bool:
    p99 = phase["latency_ms"].get("p99")
    bound = SUSTAINED_P99_MS if streams <= 1000 else SUSTAINED_P99_MS_MANY_STREAMS
    return (
        phase["delivered_fraction"] is not None
        and phase["delivered_fraction"] >= SUSTAINED_DELIVERED_FRACTION
        and p99 is not None
        and p99 <= bound
        and phase["achieved_rate"] >= 0.9 * phase["rate"]
    )


STEP_KEYS = (
    "rate",
    "achieved_rate",
    "delivered_fraction",
    "deliveries_per_s",
    "latency_ms",
    "spread_ms",
    "server_cpu",
    "cpu_us_per_delivery",
    "events_per_write",
    "client_cpu",
    "machine_busy",
    "sustained",
)


class RateSearch:
    """The highest event rate a server sustains for its streams.

    Doubles from about 5,000 deliveries/s until a step fails, then bisects
    (geometrically) between the last pass and the first failure until they
    are within 15 %. Several searches can be stepped in turn, so that
    systems compared with each other share the machine's noise.
    """

    def __init__(self, streams: int, step_seconds: float, max_steps: int) -> None:
        self.streams = streams
        self.rate = max(1.0, round(5000 / streams, 1))
        self.step_seconds = step_seconds
        self.max_steps = max_steps
        self.passed: JsonObject | None = None
        self.failed: JsonObject | None = None
        self.steps: list[JsonObject] = []
        self.done = False

    async def step(self, target: Target) -> None:
        await target.bench.client.wait_quiet(QUIET_SECONDS, 10.0)
        # At least MIN_STEP_EVENTS events, so that a rate is a rate.
        seconds = max(self.step_seconds, MIN_STEP_EVENTS / self.rate)
        phase = await run_phase(target, self.rate, seconds)
        phase["sustained"] = is_sustained(phase, self.streams)
        self.steps.append(phase)
        if phase["sustained"]:
            self.passed = phase
        else:
            self.failed = phase
        self.choose_next()
        await target.bench.client.wait_quiet(QUIET_SECONDS, 10.0)

    def choose_next(self) -> None:
        passed, failed = self.passed, self.failed
        if len(self.steps) >= self.max_steps:
            self.done = True
        elif passed is not None and failed is not None:
            if failed["rate"] / passed["rate"] <= 1.15:
                self.done = True
            else:
                self.rate = round(math.sqrt(failed["rate"] * passed["rate"]), 1)
        elif passed is not None:
            self.rate *= 2
        elif self.rate <= MIN_SEARCH_RATE:
            self.done = True
        else:
            self.rate = max(MIN_SEARCH_RATE, round(self.rate / 2, 1))

    def summary(self) -> JsonObject:
        best = self.passed or {}
        return {
            "rate": best.get("rate"),
            "deliveries_per_s": best.get("deliveries_per_s"),
            "latency_ms": best.get("latency_ms"),
            "server_cpu": best.get("server_cpu"),
            "client_cpu": best.get("client_cpu"),
            "first_failure_rate": self.failed["rate"] if self.failed else None,
            "steps": [{key: step.get(key) for key in STEP_KEYS} for step in self.steps],
        }
