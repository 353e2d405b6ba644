"""The benchmark harness end to end, small: bare peer, load client, report files.

Needs no database: the bare peer broadcasts from memory. The quick and full
benchmarks themselves are not part of the suite (`uv run python -m bench`).
"""

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench.fanout import measure_point
from bench.load import LoadClient
from bench.phases import Bench
from bench.plan import QUICK
from bench.processes import BARE
from bench.report import write_results

STREAMS = 5
EVENTS = 20
RATE = 80.0

PHASE_KEYS = {
    "rate",
    "published",
    "expected",
    "delivered",
    "delivered_fraction",
    "deliveries_per_s",
    "events_per_write",
    "cpu_us_per_delivery",
    "latency_ms",
    "server_cpu",
    "client_cpu",
}
LATENCY_KEYS = {"n", "p50", "p90", "p99", "max"}


@pytest.fixture
async def load_client() -> AsyncIterator[LoadClient]:
    client = await LoadClient.start()
    yield client
    await client.stop()


@pytest.mark.timeout(60)
async def test_bench_fanout_on_bare_peer_reports_every_delivery(
    tmp_path: Path, load_client: LoadClient
) -> None:
    plan = dataclasses.replace(QUICK, fanout_rates=(RATE,), phase_seconds=EVENTS / RATE)
    bench = Bench(plan, None, load_client, tmp_path)

    point = await measure_point(bench, BARE, STREAMS, ramp=False)
    results = {"meta": meta(), "fanout": [point]}
    written = write_results(results, tmp_path, "smoke", plots=False)

    assert point["open"]["opened"] == STREAMS
    (phase,) = point["phases"]
    assert set(phase) >= PHASE_KEYS
    assert phase["published"] == EVENTS
    assert phase["delivered"] == STREAMS * EVENTS
    assert set(phase["latency_ms"]) == LATENCY_KEYS
    assert phase["latency_ms"]["n"] == STREAMS * EVENTS
    assert {"rss_idle_mb", "rss_end_mb", "rss_per_stream_kb"} <= set(point)
    saved = json.loads((tmp_path / "smoke.json").read_text())
    assert saved["fanout"][0]["phases"][0]["delivered"] == STREAMS * EVENTS
    assert {p.name for p in written} == {"smoke.json", "smoke.md"}


def meta() -> dict[str, object]:
    return {
        "mode": "smoke",
        "command": "pytest",
        "started_at": "now",
        "commit": "test",
        "cpus": 2,
        "python": "3",
        "postgres": "none",
        "client": "test",
    }
