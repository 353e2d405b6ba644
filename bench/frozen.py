"""Scenario 6: one client stops reading among many healthy ones.

The same load runs three times on one server: healthy streams only, then
with one more stream that reads its status line and stops (with a small
receive buffer, so that the server's sends back up quickly), then healthy
only again. The events carry a
padded payload so that the frozen stream's buffers fill within the phase.
The service runs with a short SEND_TIMEOUT_SECONDS so that the drop happens
inside the phase; whether it did, and why, is read from the service's log
(`stream.closed` lines: the healthy streams stay open until the end).
"""

import asyncio
import collections
import logging
import re
import statistics

from bench.phases import Bench, JsonObject, Target, run_phase
from bench.processes import SERVICE, Server, stop_server

logger = logging.getLogger(__name__)

FROZEN_RECEIVE_BUFFER_BYTES = 4096
# `reason=slow_client` in key=value logs, `"reason": "slow_client"` in JSON.
CLOSE_REASON = re.compile(r'reason"?[=:]\s*"?(\w+)')
RSS_SAMPLE_SECONDS = 0.2


async def sample_peak_rss(server: Server, stop: asyncio.Event) -> int:
    peak = server.rss_bytes()
    while not stop.is_set():
        peak = max(peak, server.rss_bytes())
        await asyncio.sleep(RSS_SAMPLE_SECONDS)
    return max(peak, server.rss_bytes())


async def phase_with_peak_rss(
    target: Target, rate: float, seconds: float
) -> JsonObject:
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_peak_rss(target.server, stop))
    try:
        phase = await run_phase(target, rate, seconds)
    finally:
        stop.set()
        peak = await sampler
    phase["rss_peak_mb"] = round(peak / 2**20, 1)
    return phase


def count_closed_streams(log: str) -> collections.Counter[str]:
    """Streams the service closed, by reason, from its log lines."""
    return collections.Counter(
        match[1]
        for line in log.splitlines()
        if "stream.closed" in line
        for match in [CLOSE_REASON.search(line)]
        if match
    )


async def measure_frozen(bench: Bench) -> JsonObject:
    """Healthy, then one frozen client, then healthy again after its drop.

    The others' p99 with the frozen client is compared with the mean of the
    two healthy phases around it, so that a drift of the machine's load
    during the scenario does not read as the frozen client's effect.
    """
    plan = bench.plan
    database = bench.require_database()
    (run_id,) = await database.create_runs(1)
    environment = {"SEND_TIMEOUT_SECONDS": str(plan.frozen_send_timeout_seconds)}
    server = await bench.start(SERVICE, environment)
    publisher = await bench.publisher(
        SERVICE, server, [run_id], pad_bytes=plan.frozen_pad_bytes
    )
    target = Target(bench, server, publisher, plan.frozen_streams)
    path = bench.stream_path(SERVICE, run_id)
    headers = bench.stream_headers(SERVICE)
    rate, seconds = plan.frozen_rate, plan.frozen_seconds
    try:
        await bench.client.open(server.port, [(path, plan.frozen_streams)], headers)
        await asyncio.sleep(1.0)
        logger.info("bench.frozen", extra={"phase": "healthy"})
        before = await phase_with_peak_rss(target, rate, seconds)

        closed_before = count_closed_streams(server.log_text())
        await bench.client.open(
            server.port,
            [(path, 1)],
            headers,
            frozen=True,
            rcvbuf=FROZEN_RECEIVE_BUFFER_BYTES,
        )
        logger.info("bench.frozen", extra={"phase": "frozen"})
        frozen = await phase_with_peak_rss(target, rate, seconds)
        closed = count_closed_streams(server.log_text()) - closed_before

        logger.info("bench.frozen", extra={"phase": "healthy again"})
        after = await phase_with_peak_rss(target, rate, seconds)
    finally:
        await bench.client.close_all()
        await publisher.close()
        await stop_server(server)

    healthy_p99s = [p["latency_ms"].get("p99") for p in (before, after)]
    frozen_p99 = frozen["latency_ms"].get("p99")
    baseline = statistics.mean(healthy_p99s) if all(healthy_p99s) else None
    return {
        "streams": plan.frozen_streams,
        "rate": rate,
        "payload_bytes": plan.frozen_pad_bytes,
        "send_timeout_seconds": plan.frozen_send_timeout_seconds,
        "healthy": before,
        "with_frozen": frozen,
        "healthy_again": after,
        "healthy_p99_ms": round(baseline, 2) if baseline else None,
        "p99_change": round(frozen_p99 / baseline - 1, 3)
        if baseline and frozen_p99
        else None,
        "rss_added_mb": round(frozen["rss_peak_mb"] - before["rss_peak_mb"], 1),
        "frozen_dropped": sum(closed.values()) >= 1,
        "close_reasons": dict(closed),
    }
