"""Scenario 2: streams spread over many runs, a writer publishing on all of them."""

import asyncio
import logging
import uuid

from bench.phases import Bench, JsonObject, Target, run_phase
from bench.processes import (
    BARE,
    DATABASE_SYSTEMS,
    POLLING,
    SERVICE,
    stop_server,
)

logger = logging.getLogger(__name__)

SYSTEMS = (SERVICE, BARE, POLLING)
SETTLE_SECONDS = 1.2


async def measure_many_runs(bench: Bench) -> list[JsonObject]:
    plan = bench.plan
    per_run = plan.many_runs_streams // plan.many_runs
    rate = plan.many_runs * plan.many_runs_rate_per_run
    results = []
    for system in SYSTEMS:
        if system == POLLING and plan.many_runs_streams > max(plan.polling_streams):
            continue
        logger.info("bench.many_runs", extra={"system": system})
        run_ids = (
            await bench.require_database().create_runs(plan.many_runs)
            if system in DATABASE_SYSTEMS
            else [uuid.uuid4() for _ in range(plan.many_runs)]
        )
        server = await bench.start(system, through_wire=True)
        publisher = await bench.publisher(system, server, run_ids)
        target = Target(bench, server, publisher, per_run)
        try:
            opened = await bench.client.open(
                server.port,
                [(bench.stream_path(system, run_id), per_run) for run_id in run_ids],
                bench.stream_headers(system),
            )
            await asyncio.sleep(SETTLE_SECONDS)
            phase = await run_phase(
                target,
                rate,
                plan.phase_seconds,
                count_database=system in DATABASE_SYSTEMS,
            )
        finally:
            await bench.client.close_all()
            await publisher.close()
            await stop_server(server)
        results.append(
            {
                "system": system,
                "runs": plan.many_runs,
                "streams": per_run * plan.many_runs,
                "open": opened,
                **phase,
            }
        )
    return results
