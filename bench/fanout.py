"""Scenarios 1 and 5: fan-out on one run, and what it costs the database.

Each (system, stream count) point gets a fresh server process, so that its
memory is measured from a clean start: RSS idle, then N streams open, then
steady phases (10/s with database counters, 1/s), then, at the counts in the
plan, the search for the highest sustained rate.
"""

import asyncio
import logging
import uuid
from dataclasses import dataclass

from bench.phases import Bench, JsonObject, RateSearch, Target, run_phase
from bench.processes import (
    BARE,
    DATABASE_SYSTEMS,
    LISTEN_PER_CLIENT,
    POLLING,
    SERVICE,
    SYSTEMS,
    stop_server,
)
from bench.publishers import DatabasePublisher, FloorListener, publish_at_rate
from bench.stats import summarise_latencies

logger = logging.getLogger(__name__)

SETTLE_SECONDS = 1.2
IDLE_SECONDS = 2.0
# Sockets one load client may hold at once, under the hard limit of 20,000
# open files here (with room for pipes, the proxy and the database).
CLIENT_SOCKET_BUDGET = 18_000
# Streams the server refused while the others opened are retried, as real
# clients would after Retry-After.
OPEN_RETRIES = 3
OPEN_RETRY_SECONDS = 3.0
# Connections the benchmark keeps for itself, beyond the systems' own:
# monitor, writer, floor listener, and room for whoever else uses the server.
RESERVED_CONNECTIONS = 30


async def measure_floor(bench: Bench) -> JsonObject:
    """Commit to notification on a bare asyncpg LISTEN session, nothing else running."""
    database = bench.require_database()
    (run_id,) = await database.create_runs(1)
    floor = await FloorListener.connect(database.dsn)
    publisher = await DatabasePublisher.connect(database.dsn, [run_id])
    try:
        rate = 20.0
        await publish_at_rate(publisher, rate, bench.plan.floor_events / rate)
        latencies = await floor.latencies(publisher.take_sent())
    finally:
        await publisher.close()
        await floor.close()
    logger.info("bench.floor", extra={"n": len(latencies)})
    return {"rate": rate, "latency_ms": summarise_latencies(latencies)}


async def listen_per_client_cap(bench: Bench) -> int:
    """How many streams listen-per-client may open without crowding the server."""
    limit, used = await bench.require_database().max_connections()
    room = max(0, limit - used - RESERVED_CONNECTIONS)
    return min(bench.plan.listen_per_client_max_streams, room)


def plan_batches(systems: list[str], streams: int) -> list[list[str]]:
    """Which systems run side by side: as many as the client's sockets allow.

    Systems in one batch hold their streams at the same time and take turns
    phase by phase, so their ratios share the machine's noise. Polling
    always runs alone: its streams query the database while idle.
    """
    batches: list[list[str]] = []
    current: list[str] = []
    for system in systems:
        if system == POLLING:
            batches.append([system])
            continue
        if current and (len(current) + 1) * streams > CLIENT_SOCKET_BUDGET:
            batches.append(current)
            current = []
        current.append(system)
    if current:
        batches.insert(0, current)
    return batches


async def measure_fanout(bench: Bench) -> list[JsonObject]:
    plan = bench.plan
    lpc_cap = await listen_per_client_cap(bench)
    results: list[JsonObject] = []
    for streams in plan.fanout_streams:
        runnable = []
        for system in SYSTEMS:
            skip = None
            if system == LISTEN_PER_CLIENT and streams > lpc_cap:
                skip = (
                    f"needs {streams} PostgreSQL connections; the shared server "
                    f"leaves room for {lpc_cap}"
                )
            if system == POLLING and streams not in plan.polling_streams:
                continue
            if skip is None:
                runnable.append(system)
            else:
                results.append({"system": system, "streams": streams, "skipped": skip})
        for batch in plan_batches(runnable, streams):
            results += await measure_batch(bench, batch, streams)
    order = {system: index for index, system in enumerate(SYSTEMS)}
    return sorted(results, key=lambda r: (r["streams"], order[r["system"]]))


@dataclass
class Point:
    """One system's server, streams and results at one stream count."""

    target: Target
    result: JsonObject
    rss_idle: int
    search: RateSearch | None = None


async def start_point(
    bench: Bench,
    system: str,
    streams: int,
    floor: FloorListener | None,
    run_ids: list[uuid.UUID],
) -> Point:
    server = await bench.start(system, through_wire=True)
    publisher = await bench.publisher(system, server, run_ids)
    target = Target(bench, server, publisher, streams, floor)
    result = {"system": system, "streams": streams, "run_id": str(run_ids[0])}
    return Point(target, result, server.rss_bytes())


async def open_streams(bench: Bench, point: Point) -> None:
    """Open the point's streams; refused ones (503, 429) retry like clients do."""
    system = point.target.server.system
    streams = point.target.streams_per_run
    path = bench.stream_path(system, uuid.UUID(point.result["run_id"]))
    opened = await bench.client.open(
        point.target.server.port, [(path, streams)], bench.stream_headers(system)
    )
    point.result["open"] = opened
    point.result["open_per_s"] = round(streams / max(opened["seconds"], 1e-3), 1)
    missing = opened["failed"]
    retries = []
    for _ in range(OPEN_RETRIES):
        if not missing:
            break
        await asyncio.sleep(OPEN_RETRY_SECONDS)
        again = await bench.client.open(
            point.target.server.port, [(path, missing)], bench.stream_headers(system)
        )
        retries.append(again)
        missing = again["failed"]
    point.result["open_retries"] = retries
    point.result["held"] = streams - missing


async def measure_idle_cpu(points: list[Point]) -> None:
    """Each server's CPU with its streams open and nothing published."""
    before = [point.target.server.cpu_seconds() for point in points]
    await asyncio.sleep(IDLE_SECONDS)
    for point, cpu in zip(points, before, strict=True):
        used = point.target.server.cpu_seconds() - cpu
        point.result["idle_cpu"] = round(used / IDLE_SECONDS, 4)


async def measure_batch(
    bench: Bench, systems: list[str], streams: int, *, ramp: bool | None = None
) -> list[JsonObject]:
    """Open every system's streams, then take turns: steady phases, rate search."""
    plan = bench.plan
    logger.info(
        "bench.fanout", extra={"systems": ",".join(systems), "streams": streams}
    )
    needs_floor = any(system in DATABASE_SYSTEMS for system in systems)
    floor = (
        await FloorListener.connect(bench.require_database().dsn)
        if needs_floor
        else None
    )
    points: list[Point] = []
    try:
        run_ids = {
            system: await bench.require_database().create_runs(1)
            if system in DATABASE_SYSTEMS
            else [uuid.uuid4()]
            for system in systems
        }
        # Servers start side by side (their start-up is mostly imports).
        started = await asyncio.gather(
            *(
                start_point(
                    bench,
                    system,
                    streams,
                    floor if system in DATABASE_SYSTEMS else None,
                    run_ids[system],
                )
                for system in systems
            ),
            return_exceptions=True,
        )
        points = [p for p in started if isinstance(p, Point)]
        failures = [p for p in started if isinstance(p, BaseException)]
        if failures:
            raise failures[0]
        for point in points:
            await open_streams(bench, point)
        await asyncio.sleep(SETTLE_SECONDS)
        for point in points:
            point.result["rss_open_mb"] = round(
                point.target.server.rss_bytes() / 2**20, 1
            )
            point.result["phases"] = []
        await measure_idle_cpu(points)

        for rate in plan.fanout_rates:
            for point in points:
                system = point.target.server.system
                count = system in DATABASE_SYSTEMS and rate == plan.fanout_rates[0]
                phase = await run_phase(
                    point.target, rate, plan.phase_seconds, count_database=count
                )
                point.result["phases"].append(phase)

        searching = streams in plan.ramp_streams if ramp is None else ramp
        for point in points:
            if searching and point.target.server.system in (SERVICE, BARE):
                point.search = RateSearch(
                    streams, plan.ramp_step_seconds, plan.ramp_max_steps
                )
        while any(p.search is not None and not p.search.done for p in points):
            for point in points:
                if point.search is not None and not point.search.done:
                    await point.search.step(point.target)

        for point in points:
            rss_end = point.target.server.rss_bytes()
            point.result.update(
                rss_idle_mb=round(point.rss_idle / 2**20, 1),
                rss_end_mb=round(rss_end / 2**20, 1),
                rss_per_stream_kb=round((rss_end - point.rss_idle) / streams / 1024, 2),
            )
            if point.search is not None:
                point.result["max"] = point.search.summary()
    finally:
        await bench.client.close_all()
        for point in points:
            await point.target.publisher.close()
            await stop_server(point.target.server)
        if floor is not None:
            await floor.close()
    return [point.result for point in points]


async def measure_point(
    bench: Bench, system: str, streams: int, *, ramp: bool
) -> JsonObject:
    """One system alone at one stream count (the smoke test's entry)."""
    (result,) = await measure_batch(bench, [system], streams, ramp=ramp)
    return result


def summarise_database_cost(fanout: list[JsonObject]) -> list[JsonObject]:
    """Scenario 5's table, read from the 10/s phase of every fan-out point."""
    rows = []
    for point in fanout:
        if "phases" not in point or point["system"] not in DATABASE_SYSTEMS:
            continue
        db = point["phases"][0].get("db")
        if db is None:
            continue
        rows.append(
            {
                "system": point["system"],
                "streams": point["streams"],
                "rate": point["phases"][0]["rate"],
                "connections": db["connections_total"],
                "connections_by_application": db["connections"],
                "queries_per_s": db["queries_per_s"],
                "queries_per_event": db["queries_per_event"],
                "by_kind_per_event": db["by_kind_per_event"],
                "reads_per_event": db["reads_per_event"],
                "rows_per_event": db["rows_per_event"],
                "notifications_per_event": db["notifications_per_event"],
            }
        )
    return rows
