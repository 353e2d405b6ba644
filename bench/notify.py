"""NOTIFY itself, for docs/SCALING.md: its throughput, its commit lock, and
what many listening sessions (one per replica) cost.

PostgreSQL serialises the commits of all transactions that sent a
notification on one global lock (taken in PreCommit_Notify and held until
the commit record is flushed), so notifying writers scale worse than plain
ones. Each listening session then reads every notification of the
database, so the cost of a notification grows with the number of replicas.

Writers insert into the plain table (no triggers) so that only the NOTIFY
differs; the notification carries the writer's clock so that listeners
measure commit-to-notification time.
"""

import asyncio
import logging
import statistics
import sys
import time
from typing import Any

import asyncpg
import orjson

from bench.fanout import listen_per_client_cap
from bench.phases import Bench, JsonObject
from bench.processes import REPO_ROOT
from bench.publishers import WRITER_APPLICATION_NAME

logger = logging.getLogger(__name__)

CHANNEL = "bench_notify"
PLAIN = (
    "INSERT INTO bench_plain_events (run_id, type, phase)"
    " VALUES (gen_random_uuid(), 'phase_changed', 'bench')"
)
NOTIFYING = (
    "WITH e AS (INSERT INTO bench_plain_events (run_id, type, phase)"
    " VALUES (gen_random_uuid(), 'phase_changed', 'bench') RETURNING id)"
    f" SELECT pg_notify('{CHANNEL}', $1) FROM e"
)
WRITER_COUNTS = (1, 4, 8)
LISTENER_COUNTS = (1, 10, 40)
MAX_WRITES_PER_SECOND = 50_000


class Listeners:
    """The controller's side of bench/listeners.py."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, dsn: str) -> "Listeners":
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.listeners",
            dsn,
            cwd=REPO_ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def call(self, line: str) -> JsonObject:
        stdin, stdout = self.process.stdin, self.process.stdout
        if stdin is None or stdout is None:
            raise RuntimeError("the listener process has no pipes")
        stdin.write(line.encode() + b"\n")
        await stdin.drain()
        answer: JsonObject = orjson.loads(await asyncio.wait_for(stdout.readline(), 60))
        return answer

    async def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def write(conns: list[Any], notify: bool, seconds: float) -> float:
    limit = int(seconds * MAX_WRITES_PER_SECOND)

    async def one(conn: Any, deadline: float) -> int:
        count = 0
        while count < limit and time.monotonic() < deadline:
            if notify:
                await conn.execute(NOTIFYING, f"{time.monotonic():.6f}")
            else:
                await conn.execute(PLAIN)
            count += 1
        return count

    started = time.monotonic()
    counts = await asyncio.gather(*(one(c, started + seconds) for c in conns))
    return sum(counts) / (time.monotonic() - started)


async def measure_notify(bench: Bench) -> JsonObject:
    database = bench.require_database()
    seconds = bench.plan.writes_seconds
    room = await listen_per_client_cap(bench)
    writers = [
        await asyncpg.connect(
            database.dsn, server_settings={"application_name": WRITER_APPLICATION_NAME}
        )
        for _ in range(max(WRITER_COUNTS))
    ]
    listeners = await Listeners.start(database.dsn)
    scaling: list[JsonObject] = []
    fan_in: list[JsonObject] = []
    try:
        await listeners.call("grow 1")
        rounds = max(2, bench.plan.writes_rounds)
        for count in WRITER_COUNTS:
            # Alternated and repeated; the medians are kept.
            plains, notifyings = [], []
            for _ in range(rounds):
                plains.append(await write(writers[:count], False, seconds))
                notifyings.append(await write(writers[:count], True, seconds))
            plain = statistics.median(plains)
            notifying = statistics.median(notifyings)
            scaling.append(
                {
                    "writers": count,
                    "plain_per_s": round(plain, 1),
                    "notify_per_s": round(notifying, 1),
                    "notify_share": round(notifying / plain, 3) if plain else None,
                }
            )
        for count in LISTENER_COUNTS:
            if count > max(room, 1):
                fan_in.append({"listeners": count, "skipped": f"room for {room}"})
                continue
            logger.info("bench.notify", extra={"listeners": count})
            await listeners.call(f"grow {count}")
            await asyncio.sleep(0.2)
            await listeners.call("report")
            rate = await write(writers[:4], True, seconds)
            await asyncio.sleep(0.5)
            report = await listeners.call("report")
            fan_in.append(
                {
                    "listeners": count,
                    "writers": 4,
                    "notify_per_s": round(rate, 1),
                    "received_per_s_per_listener": round(
                        report["received"] / count / seconds, 1
                    ),
                    "latency_ms": report["latency_ms"],
                }
            )
    finally:
        await listeners.close()
        for conn in writers:
            await conn.close()
    return {"writers": scaling, "listeners": fan_in}
