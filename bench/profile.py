"""py-spy under fan-out: where a server process spends its CPU.

`--profile` records the service and the bare peer under the same load
(streams on one run, a steady rate), as py-spy's raw collapsed stacks, and
summarises them: the share of on-CPU samples in which each function is on
the stack (inclusive) or at its top (self), and the share per library.
"""

import asyncio
import collections
import logging
import re
import shutil
import time
import uuid
from asyncio.subprocess import Process
from pathlib import Path

from bench.phases import Bench, JsonObject
from bench.processes import BARE, DATABASE_SYSTEMS, SERVICE, stop_server
from bench.publishers import publish_at_rate
from bench.replay import REPLAY_TIMEOUT_SECONDS, seed_long_run

logger = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 200
TOP_FUNCTIONS = 25

# py-spy's raw format: `frame;frame;... count`, a frame `name (file:line)`.
FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^:]*)(?::\d+)?\)$")

# Where a frame's file lives says which part of the stack pays.
COMPONENTS = (
    ("app/", "app"),
    ("sse_starlette/", "sse-starlette"),
    ("starlette/", "starlette"),
    ("fastapi/", "fastapi"),
    ("uvicorn/", "uvicorn"),
    ("anyio/", "anyio"),
    ("prometheus_client/", "prometheus-client"),
    ("sqlalchemy/", "sqlalchemy"),
    ("asyncpg/", "asyncpg"),
    ("uvloop/", "uvloop"),
    ("asyncio/", "asyncio"),
    ("logging/", "logging"),
    ("bench/", "bench peer"),
)


def py_spy_command() -> list[str]:
    installed = shutil.which("py-spy")
    if installed:
        return [installed]
    return ["uvx", "py-spy"]


# Frames every sample of the main thread passes through: the command line,
# uvicorn's start-up and the event loop's entry. Left out of the inclusive
# table; time spent inside the loop's C code shows as self time of
# `Runner.run` (uvloop is C, so py-spy has no frame below it).
ROOT_FILES = (
    "typer/",
    "click/",
    "<frozen runpy>",
    "asyncio/runners.py",
    "uvicorn/main.py",
    "uvicorn/server.py",
    "uvicorn/_compat.py",
    "app/cli/",
    "selftune-events",
)
ROOT_FUNCTIONS = frozenset({"<module>", "main"})


def is_root(name: str, file: str) -> bool:
    return file.startswith(ROOT_FILES) or (
        name in ROOT_FUNCTIONS and file.startswith("bench/peers/")
    )


def component_of(file: str) -> str:
    if file.startswith("asyncio/runners.py"):
        return "event loop (uvloop, C)"
    for marker, name in COMPONENTS:
        if marker in file:
            return name
    return "other"


def frame_key(frame: str) -> tuple[str, str]:
    match = FRAME.match(frame)
    if match is None:
        return frame, ""
    file = match["file"]
    for marker in ("site-packages/", "/work/main/", "lib/python3."):
        if marker in file:
            file = file.split(marker, 1)[1]
    return match["name"], file


def summarise_stacks(text: str) -> JsonObject:
    """Self and inclusive shares of each function, and each component's self share."""
    self_counts: collections.Counter[tuple[str, str]] = collections.Counter()
    inclusive: collections.Counter[tuple[str, str]] = collections.Counter()
    components: collections.Counter[str] = collections.Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_key(f) for f in stack.split(";") if f.strip()]
        # py-spy puts the thread first; it is not a function.
        frames = [f for f in frames if f[1]]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        components[component_of(frames[-1][1])] += count
        for key in set(frames):
            if not is_root(*key):
                inclusive[key] += count

    def share(counter: collections.Counter[tuple[str, str]]) -> list[JsonObject]:
        return [
            {"function": name, "file": file, "percent": round(100 * n / total, 1)}
            for (name, file), n in counter.most_common(TOP_FUNCTIONS)
        ]

    return {
        "samples": total,
        "self": share(self_counts) if total else [],
        "inclusive": share(inclusive) if total else [],
        "components": {
            name: round(100 * n / total, 1) for name, n in components.most_common()
        }
        if total
        else {},
    }


async def start_recorder(pid: int, seconds: float, output: Path) -> Process:
    return await asyncio.create_subprocess_exec(
        *py_spy_command(),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(int(seconds)),
        "--rate",
        str(SAMPLE_RATE_HZ),
        "--format",
        "raw",
        "--output",
        str(output),
        "--nonblocking",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish_recording(recorder: Process, output: Path) -> JsonObject:
    _, stderr = await asyncio.wait_for(recorder.communicate(), 60)
    if recorder.returncode != 0 or not output.exists():
        return {"error": stderr.decode(errors="replace")[-500:]}
    return {"stacks": output.name, **summarise_stacks(output.read_text())}


async def profile_replay(bench: Bench, results_dir: Path) -> JsonObject:
    """The service while ten clients at a time read a long run from its start."""
    plan = bench.plan
    database = bench.require_database()
    (run_id,) = await database.create_runs(1)
    await seed_long_run(database.monitor, run_id, plan.replay_events)
    server = await bench.start(SERVICE)
    output = results_dir / "profile-service-replay.txt"
    path = bench.stream_path(SERVICE, run_id)
    events = 0
    try:
        recorder = await start_recorder(server.pid, plan.profile_seconds, output)
        await asyncio.sleep(1.0)
        started = time.monotonic()
        while time.monotonic() - started < plan.profile_seconds - 2:
            await bench.client.open(
                server.port,
                [(path, plan.replay_clients)],
                bench.stream_headers(SERVICE),
            )
            ended = await bench.client.wait_ended(REPLAY_TIMEOUT_SECONDS)
            events += ended["events"]
            await bench.client.close_all()
        seconds = time.monotonic() - started
        recorded = await finish_recording(recorder, output)
    finally:
        await bench.client.close_all()
        await stop_server(server)
    return {
        "system": SERVICE,
        "scenario": f"replay, {plan.replay_clients} clients at a time",
        "events_per_s": round(events / seconds),
        **recorded,
    }


async def profile_system(bench: Bench, system: str, results_dir: Path) -> JsonObject:
    plan = bench.plan
    run_ids = (
        await bench.require_database().create_runs(1)
        if system in DATABASE_SYSTEMS
        else [uuid.uuid4()]
    )
    server = await bench.start(system)
    publisher = await bench.publisher(system, server, run_ids)
    output = results_dir / f"profile-{system}.txt"
    try:
        await bench.client.open(
            server.port,
            [(bench.stream_path(system, run_ids[0]), plan.profile_streams)],
            bench.stream_headers(system),
        )
        await asyncio.sleep(1.0)
        recorder = await start_recorder(server.pid, plan.profile_seconds, output)
        await asyncio.sleep(1.0)
        cpu_before = server.cpu_seconds()
        await bench.client.window()
        published = await publish_at_rate(
            publisher, plan.profile_rate, plan.profile_seconds
        )
        window = await bench.client.window()
        cpu = (server.cpu_seconds() - cpu_before) / window["seconds"]
        recorded = await finish_recording(recorder, output)
    finally:
        await bench.client.close_all()
        await publisher.close()
        await stop_server(server)

    return {
        "system": system,
        "scenario": f"fan-out, {plan.profile_streams} streams on one run",
        "streams": plan.profile_streams,
        "rate": plan.profile_rate,
        "published": published,
        "deliveries_per_s": round(window["events"] / window["seconds"], 1),
        "latency_ms": window["latency_ms"],
        "server_cpu": round(cpu, 3),
        **recorded,
    }


async def measure_profiles(bench: Bench, results_dir: Path) -> list[JsonObject]:
    results_dir.mkdir(parents=True, exist_ok=True)
    profiles = []
    for system in (SERVICE, BARE):
        logger.info("bench.profile", extra={"system": system})
        profiles.append(await profile_system(bench, system, results_dir))
    logger.info("bench.profile", extra={"system": SERVICE, "scenario": "replay"})
    profiles.append(await profile_replay(bench, results_dir))
    return profiles
