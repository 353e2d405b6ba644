"""The benchmark's own scratch database: create, migrate, seed, drop.

Only databases named `selftune_bench_*` that this process created are ever
dropped. What the systems ask of the database is counted on the wire by
bench/pgwire.py, not here.
"""

import asyncio
import os
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from app.db import keys as key_queries
from app.db import orgs as org_queries
from app.db import runs as run_queries
from app.keys import generate_key, hash_key, visible_prefix
from bench.processes import service_environment, service_launcher

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE_PREFIX = "selftune_bench_"
MONITOR_APPLICATION_NAME = "bench-monitor"
# Sessions the benchmark itself opens; left out of the systems' counts.
BENCH_APPLICATIONS = frozenset(
    {MONITOR_APPLICATION_NAME, "bench-writer", "bench-floor", "bench-seed"}
)

# A plain events table without the contract's triggers, for the writes
# scenario: the same columns, a serial key and an index like the real one.
PLAIN_TABLE = [
    """
CREATE TABLE bench_plain_events (
    id bigserial PRIMARY KEY,
    run_id uuid NOT NULL,
    type text NOT NULL,
    status text,
    phase text,
    candidate_id text,
    proposal_id text,
    payload jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
)""",
    "CREATE INDEX bench_plain_events_run ON bench_plain_events (run_id, id)",
]


def with_database(server_url: str, name: str) -> str:
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


@dataclass
class ScratchDatabase:
    name: str
    server_url: str
    url: str
    org_id: uuid.UUID
    key: str
    monitor: Any

    @property
    def dsn(self) -> str:
        return self.url

    def url_through(self, port: int) -> str:
        """The same database reached through a proxy on a loopback port."""
        url = make_url(self.url).set(host="127.0.0.1", port=port)
        return url.render_as_string(hide_password=False)

    async def create_runs(self, count: int) -> list[uuid.UUID]:
        return [
            await run_queries.create_run(self.monitor, self.org_id)
            for _ in range(count)
        ]

    async def oldest_transaction_seconds(self) -> float:
        """Age of the oldest open transaction on the whole server.

        A long one anywhere holds back pruning in every database, which makes
        each publish walk a longer version chain of its run's row.
        """
        age = await self.monitor.fetchval(
            "SELECT extract(epoch FROM max(now() - xact_start)) FROM pg_stat_activity"
            " WHERE backend_xmin IS NOT NULL AND pid <> pg_backend_pid()"
        )
        return round(float(age or 0), 1)

    async def max_connections(self) -> tuple[int, int]:
        """The server's max_connections and how many sessions it holds now."""
        limit = int(await self.monitor.fetchval("SHOW max_connections"))
        used = int(await self.monitor.fetchval("SELECT count(*) FROM pg_stat_activity"))
        return limit, used


async def create_scratch_database(
    server_url: str, service_source: Path | None = None
) -> ScratchDatabase:
    """A new, migrated database with one organisation and key."""
    name = f"{DATABASE_PREFIX}{os.getpid()}_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()

    url = with_database(server_url, name)
    try:
        await migrate(url, service_source)
        monitor = await asyncpg.connect(
            url, server_settings={"application_name": MONITOR_APPLICATION_NAME}
        )
        for statement in PLAIN_TABLE:
            await monitor.execute(statement)
        org_id = await org_queries.create_org(monitor, "bench")
        key = generate_key(test=True)
        await key_queries.insert_key(
            monitor, org_id, prefix=visible_prefix(key), key_hash=hash_key(key)
        )
    except BaseException:
        await drop_database(server_url, name)
        raise
    return ScratchDatabase(name, server_url, url, org_id, key, monitor)


async def migrate(url: str, service_source: Path | None) -> None:
    """`selftune-events migrate`, as an operator runs it, from the measured tree."""
    process = await asyncio.create_subprocess_exec(
        *service_launcher(),
        "migrate",
        env={
            **os.environ,
            "DATABASE_URL": url,
            "LOG_LEVEL": "warning",
            **service_environment(service_source),
        },
        cwd=service_source,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"migrate failed: {stderr.decode(errors='replace')}")


async def drop_scratch_database(database: ScratchDatabase) -> None:
    await database.monitor.close()
    await drop_database(database.server_url, database.name)


async def drop_database(server_url: str, name: str) -> None:
    if not name.startswith(DATABASE_PREFIX):
        raise ValueError(f"refusing to drop {name!r}: not a benchmark database")
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
