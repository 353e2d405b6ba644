"""Patched builds of the service, measured side by side (bench/patched_serve.py).

    uv run python -m bench.variants base gcdefault nometrics bare

Every build holds the same number of streams on a run of its own at the
same time; then each round publishes to each build in turn, and the medians
over the rounds are printed as one JSON line per build. `bare` is the bare
peer. Environment: STREAMS (1000), RATE (10), SECONDS (3), ROUNDS (3).
"""

import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

import orjson

from bench.database import (
    DEFAULT_POSTGRES_URL,
    ScratchDatabase,
    create_scratch_database,
    drop_scratch_database,
)
from bench.load import LoadClient
from bench.phases import Bench, JsonObject, Target, run_phase
from bench.plan import QUICK
from bench.processes import (
    BARE,
    SERVICE,
    Server,
    find_free_port,
    start_server,
    stop_server,
    wait_until_ready,
)
from bench.runner import export_head, raise_file_limit

LAUNCHER = Path(__file__).parent / "patched_serve.py"


async def start_build(
    build: str, database: ScratchDatabase, source: Path, log_dir: Path
) -> Server:
    if build == BARE:
        return await start_server(BARE, database_url="", dsn="", log_dir=log_dir)
    port = find_free_port()
    log_path = log_dir / f"{build}-{port}.log"
    env = {
        **os.environ,
        "DATABASE_URL": database.url,
        "MAX_STREAMS_PER_ORG": "1000000",
        "PYTHONPATH": str(source),
    }
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(LAUNCHER),
            build,
            "serve",
            "--port",
            str(port),
            env=env,
            cwd=source,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    server = Server(SERVICE, process, port, log_path)
    await wait_until_ready(server)
    return server


def summarise(build: str, phases: list[JsonObject], rss_kib: float) -> JsonObject:
    def median(key: str) -> float:
        return round(float(statistics.median(p[key] for p in phases)), 1)

    def median_of(block: str, key: str) -> float:
        values = [float(p[block].get(key, 0)) for p in phases]
        return round(statistics.median(values), 1)

    return {
        "build": build,
        "cpu_us_per_delivery": median("cpu_us_per_delivery"),
        "p50_ms": median_of("latency_ms", "p50"),
        "p99_ms": median_of("latency_ms", "p99"),
        "spread_p50_ms": median_of("spread_ms", "p50"),
        "rss_per_stream_kib": rss_kib,
        "rounds_cpu_us": [p["cpu_us_per_delivery"] for p in phases],
    }


async def measure(builds: list[str]) -> list[JsonObject]:
    streams = int(os.environ.get("STREAMS", "1000"))
    rate = float(os.environ.get("RATE", "10"))
    seconds = float(os.environ.get("SECONDS", "3"))
    rounds = int(os.environ.get("ROUNDS", "3"))

    log_dir = Path(tempfile.mkdtemp(prefix="selftune-variants-"))
    source = export_head(log_dir)
    database = await create_scratch_database(
        os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL), source
    )
    client = await LoadClient.start()
    bench = Bench(QUICK, database, client, log_dir, source)
    targets: dict[str, Target] = {}
    rss: dict[str, float] = {}
    phases: dict[str, list[JsonObject]] = {build: [] for build in builds}
    try:
        for build in builds:
            system = BARE if build == BARE else SERVICE
            (run_id,) = await database.create_runs(1)
            server = await start_build(build, database, source, log_dir)
            idle = server.rss_bytes()
            publisher = await bench.publisher(system, server, [run_id])
            targets[build] = Target(bench, server, publisher, streams)
            await client.open(
                server.port,
                [(bench.stream_path(system, run_id), streams)],
                bench.stream_headers(system),
            )
            await asyncio.sleep(1.5)
            rss[build] = round((server.rss_bytes() - idle) / streams / 1024, 1)
        for _ in range(rounds):
            for build in builds:
                phases[build].append(await run_phase(targets[build], rate, seconds))
    finally:
        await client.close_all()
        for target in targets.values():
            await target.publisher.close()
            await stop_server(target.server)
        await client.stop()
        await drop_scratch_database(database)
    return [summarise(build, phases[build], rss[build]) for build in builds]


def main() -> None:
    raise_file_limit()
    builds = sys.argv[1:] or ["base", BARE]
    for line in asyncio.run(measure(builds)):
        sys.stdout.write(orjson.dumps(line).decode() + "\n")


if __name__ == "__main__":
    main()
