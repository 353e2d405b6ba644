"""The database's side of a phase, from the counting proxy (bench/pgwire.py)."""

import asyncio
import collections
import sys
from dataclasses import dataclass
from typing import Any

import orjson

from bench.processes import REPO_ROOT

JsonObject = dict[str, Any]


def classify(sql: str) -> str:
    """A statement's role, for tables: what the systems spend queries on."""
    text = sql.upper()
    if "FROM RUN_EVENTS" in text and text.startswith("SELECT"):
        return "read run_events"
    if text in (";", ""):
        return "pool pre-ping"
    if text.startswith(("BEGIN", "ROLLBACK", "COMMIT")):
        return "transaction control"
    if "PG_NOTIFY" in text:
        return "listener probe"
    if "API_KEYS" in text or "READ_TOKENS" in text or "FROM RUNS" in text:
        return "request checks"
    return "other"


@dataclass
class WireCounter:
    process: asyncio.subprocess.Process
    port: int

    @classmethod
    async def start(cls, upstream_port: int) -> "WireCounter":
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.pgwire",
            "--upstream-port",
            str(upstream_port),
            cwd=REPO_ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        if process.stdout is None:
            raise RuntimeError("the counting proxy has no stdout")
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        return cls(process, int(line))

    async def snapshot(self) -> JsonObject:
        if self.process.stdin is None or self.process.stdout is None:
            raise RuntimeError("the counting proxy has no pipes")
        self.process.stdin.write(b"snapshot\n")
        await self.process.stdin.drain()
        counts: JsonObject = orjson.loads(
            await asyncio.wait_for(self.process.stdout.readline(), 30)
        )
        return counts

    async def stop(self) -> None:
        if self.process.returncode is None and self.process.stdin is not None:
            self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


def describe_database_work(
    before: JsonObject,
    after: JsonObject,
    *,
    applications: frozenset[str],
    published: int,
    seconds: float,
) -> JsonObject:
    """What one system (its sessions' application names) asked of PostgreSQL
    between two proxy snapshots."""
    calls: collections.Counter[str] = collections.Counter()
    rows: collections.Counter[str] = collections.Counter()
    earlier = {(s["app"], s["sql"]): s for s in before["statements"]}
    statements = []
    for entry in after["statements"]:
        if entry["app"] not in applications:
            continue
        old = earlier.get((entry["app"], entry["sql"]), {"calls": 0, "rows": 0})
        new_calls = entry["calls"] - old["calls"]
        if not new_calls:
            continue
        kind = classify(entry["sql"])
        calls[kind] += new_calls
        rows[kind] += entry["rows"] - old["rows"]
        statements.append(
            {"app": entry["app"], "sql": entry["sql"], "calls": new_calls, "kind": kind}
        )

    per_event = max(published, 1)
    notified = sum(
        n - before["notifications"].get(app, 0)
        for app, n in after["notifications"].items()
        if app in applications
    )
    connections = {app: n for app, n in after["open"].items() if app in applications}
    total = sum(calls.values())
    return {
        "queries": total,
        "queries_per_s": round(total / seconds, 1),
        "queries_per_event": round(total / per_event, 2),
        "by_kind_per_event": {
            kind: round(n / per_event, 2) for kind, n in calls.most_common()
        },
        "reads_per_event": round(calls["read run_events"] / per_event, 2),
        "rows_per_event": round(rows["read run_events"] / per_event, 2),
        "notifications_per_event": round(notified / per_event, 2),
        "connections": connections,
        "connections_total": sum(connections.values()),
        "statements": sorted(statements, key=lambda s: -s["calls"])[:12],
    }
