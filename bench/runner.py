"""One benchmark run: a scratch database, a load client, the scenarios, the files."""

import argparse
import asyncio
import datetime
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from bench.database import (
    DEFAULT_POSTGRES_URL,
    create_scratch_database,
    drop_scratch_database,
)
from bench.dbcost import WireCounter
from bench.fanout import measure_fanout, measure_floor, summarise_database_cost
from bench.frozen import measure_frozen
from bench.load import LoadClient
from bench.many_runs import measure_many_runs
from bench.notify import measure_notify
from bench.phases import Bench, JsonObject
from bench.plan import FULL, QUICK
from bench.profile import measure_profiles
from bench.replay import measure_replay
from bench.report import write_results
from bench.targets import evaluate_targets
from bench.writes import measure_writes

logger = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).parent / "results"
CLIENT_DESCRIPTION = (
    "one asyncio process (uvloop) holding every stream on a raw socket, "
    "with a hand-written HTTP/1.1 status-line and chunked-body reader"
)

Scenario = Callable[[Bench], Awaitable[Any]]
SCENARIOS: dict[str, Scenario] = {
    "floor": measure_floor,
    "fanout": measure_fanout,
    "many_runs": measure_many_runs,
    "replay": measure_replay,
    "writes": measure_writes,
    "frozen": measure_frozen,
    "notify": measure_notify,
}


def raise_file_limit() -> int:
    """Raise the soft limit on open files to the hard one; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


ROOT = Path(__file__).parent.parent


def export_head(destination: Path) -> Path:
    """The committed `app` and `migrations` of HEAD, unpacked under `destination`.

    The service is measured as committed, so that others' unfinished edits in
    the working tree neither break a run nor blur what a result refers to.
    """
    tree = destination / "service-head"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "archive", "HEAD", "app", "migrations"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def describe_checkout() -> tuple[str, bool]:
    root = ROOT
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--", "app", "migrations"],
                cwd=root,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False
    return commit, dirty


# An open transaction older than this on the server is worth a note.
OLD_TRANSACTION_SECONDS = 60.0


async def describe_environment(bench: Bench) -> JsonObject:
    """What else the machine and the server were doing as a scenario began."""
    oldest = await bench.require_database().oldest_transaction_seconds()
    if oldest > OLD_TRANSACTION_SECONDS:
        bench.notes.append(
            f"a transaction elsewhere on the PostgreSQL server had been open "
            f"{oldest:.0f} s; it holds back pruning, which slows the publish "
            "trigger's update of each run's row"
        )
    return {
        "load_average": round(os.getloadavg()[0], 2),
        "oldest_transaction_s": oldest,
    }


def checkpoint(results: JsonObject, results_dir: Path, prefix: str) -> None:
    """What is measured so far, in case a later scenario fails."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{prefix}.json.tmp"
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the events service against small peers.",
    )
    parser.add_argument("--quick", action="store_true", help="about 2 minutes")
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help="comma-separated scenarios: " + ", ".join(SCENARIOS),
    )
    parser.add_argument(
        "--profile", action="store_true", help="also record py-spy profiles"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="a PostgreSQL server where selftune_bench_* databases may be made",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--service-source",
        choices=("head", "working"),
        default="head",
        help="measure the service as committed at HEAD (default) or the working tree",
    )
    parser.add_argument("--keep-logs", action="store_true")
    return parser.parse_args(argv)


async def run_benchmark(args: argparse.Namespace) -> JsonObject:
    plan = QUICK if args.quick else FULL
    selected = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(selected) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))}")

    started = time.monotonic()
    commit, dirty = describe_checkout()
    log_dir = Path(tempfile.mkdtemp(prefix="selftune-bench-"))
    source = export_head(log_dir) if args.service_source == "head" else None
    database = await create_scratch_database(args.postgres_url, source)
    postgres = await database.monitor.fetchval("SHOW server_version")
    client = await LoadClient.start()
    wire = await WireCounter.start(make_url(args.postgres_url).port or 5432)
    bench = Bench(plan, database, client, log_dir, source, wire)
    command = "uv run python -m bench" + (" --quick" if args.quick else "")
    results: JsonObject = {
        "meta": {
            "mode": plan.mode,
            "command": command + (" --profile" if args.profile else ""),
            "started_at": datetime.datetime.now(datetime.UTC).isoformat(
                timespec="seconds"
            ),
            "commit": commit,
            "service_source": args.service_source,
            "dirty": dirty and args.service_source == "working",
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "postgres": postgres,
            "file_limit": raise_file_limit(),
            "client": CLIENT_DESCRIPTION,
            "plan": plan.__dict__,
        }
    }
    results["environment"] = {}
    try:
        for name in selected:
            logger.info("bench.scenario", extra={"scenario": name})
            results["environment"][name] = await describe_environment(bench)
            results[name] = await SCENARIOS[name](bench)
            checkpoint(results, args.results_dir, plan.mode)
        if args.profile:
            results["profiles"] = await measure_profiles(bench, args.results_dir)
    finally:
        await client.stop()
        await wire.stop()
        await drop_scratch_database(database)
        if args.keep_logs:
            logger.info("bench.logs", extra={"dir": str(log_dir)})
        else:
            shutil.rmtree(log_dir, ignore_errors=True)

    if "fanout" in results:
        results["database_cost"] = summarise_database_cost(results["fanout"])
    results["targets"] = evaluate_targets(results)
    results["notes"] = bench.notes
    results["meta"]["seconds"] = round(time.monotonic() - started)
    return results


def main(argv: list[str] | None = None) -> None:
    from app.logging import configure_logging

    configure_logging("info")
    raise_file_limit()
    args = parse_arguments(argv)
    results = asyncio.run(run_benchmark(args))
    written = write_results(results, args.results_dir, results["meta"]["mode"])
    for path in written:
        sys.stderr.write(f"wrote {path}\n")
