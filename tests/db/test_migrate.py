"""upgrade_to_head: repeatable, safe when instances start together, reversible."""

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import runs as run_queries
from app.db.engine import create_engine, to_asyncpg_dsn
from app.db.migrate import build_alembic_config, upgrade_to_head
from tests.db.backends import wait_for_advisory_waiters
from tests.db.writer import read_events, write_with_sql

# The advisory lock migrations/env.py takes before it migrates; that module
# runs Alembic when imported, so the number is repeated here.
MIGRATION_LOCK_ID = 0x5E1F7E

# A migration of this size takes well under a second once it has the lock.
UPGRADE_TIMEOUT_SECONDS = 60.0

HEAD = ScriptDirectory.from_config(build_alembic_config()).get_current_head()

# The last revision whose trigger kept a counter on the run's row.
LAST_SEQ_REVISION = "0002"

REPOSITORY = Path(__file__).resolve().parents[2]

UPGRADE_SCRIPT = """
import asyncio
import sys

from app.db.engine import create_engine
from app.db.migrate import upgrade_to_head


async def upgrade(database_url):
    engine = create_engine(database_url, pool_size=1)
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()


asyncio.run(upgrade(sys.argv[1]))
"""

MakeEngine = Callable[[], AsyncEngine]


@pytest.fixture
async def make_engine(scratch_database_url: str) -> AsyncIterator[MakeEngine]:
    """Engines on the scratch database, disposed of afterwards."""
    engines: list[AsyncEngine] = []

    def make() -> AsyncEngine:
        engine = create_engine(scratch_database_url, pool_size=1)
        engines.append(engine)
        return engine

    yield make

    for engine in engines:
        await engine.dispose()


@pytest.fixture
async def scratch(scratch_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(to_asyncpg_dsn(scratch_database_url))
    yield conn
    await conn.close()


async def read_versions(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch("SELECT version_num FROM alembic_version")
    return [row["version_num"] for row in rows]


async def read_schema(conn: asyncpg.Connection) -> dict[str, list[str]]:
    """Tables, functions and triggers of the public schema, by name."""
    tables = await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
    )
    functions = await conn.fetch(
        """
        SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' ORDER BY 1
        """
    )
    triggers = await conn.fetch(
        "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1"
    )
    return {
        "tables": [row[0] for row in tables],
        "functions": [row[0] for row in functions],
        "triggers": [row[0] for row in triggers],
    }


async def make_run(conn: asyncpg.Connection) -> uuid.UUID:
    org_id, run_id = uuid.uuid4(), uuid.uuid4()
    await conn.execute(
        "INSERT INTO organisations (id, name) VALUES ($1, 'migrated')", org_id
    )
    await conn.execute("INSERT INTO runs (id, org_id) VALUES ($1, $2)", run_id, org_id)
    return run_id


async def start_upgrade(database_url: str) -> asyncio.subprocess.Process:
    """Run upgrade_to_head in a new Python process, as another instance would."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        UPGRADE_SCRIPT,
        database_url,
        cwd=REPOSITORY,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish_upgrade(process: asyncio.subprocess.Process) -> tuple[int, str]:
    """The process's exit code and what it wrote on stderr."""
    try:
        _, stderr = await asyncio.wait_for(
            process.communicate(), UPGRADE_TIMEOUT_SECONDS
        )
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def move_to(engine: AsyncEngine, revision: str, *, down: bool = False) -> None:
    """Upgrade, or with `down` downgrade, to `revision` in one transaction."""

    def move(connection: Connection) -> None:
        config = build_alembic_config()
        config.attributes["connection"] = connection
        step = command.downgrade if down else command.upgrade
        step(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(move)


async def downgrade_to_base(engine: AsyncEngine) -> None:
    await move_to(engine, "base", down=True)


async def read_run_columns(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        """
        SELECT column_name FROM information_schema.columns
        WHERE table_schema = 'public' AND table_name = 'runs'
        ORDER BY ordinal_position
        """
    )
    return [row[0] for row in rows]


async def read_publish_function(conn: asyncpg.Connection) -> str:
    source: str = await conn.fetchval(
        "SELECT prosrc FROM pg_proc WHERE proname = 'selftune_publish_event'"
    )
    return source


async def read_seqs(conn: asyncpg.Connection, run_id: uuid.UUID) -> list[int]:
    return [event["seq"] for event in await read_events(conn, run_id)]


async def test_upgrade_to_head_creates_publish_contract(
    scratch: asyncpg.Connection, make_engine: MakeEngine
) -> None:
    await upgrade_to_head(make_engine())

    schema = await read_schema(scratch)
    assert await read_versions(scratch) == [HEAD]
    assert schema["tables"] == [
        "alembic_version",
        "api_keys",
        "organisations",
        "read_tokens",
        "run_events",
        "runs",
    ]
    assert schema["triggers"] == [
        "run_events_append_only",
        "run_events_delete_only_ended",
        "run_events_notify",
        "run_events_publish",
    ]
    assert "selftune_uuidv7" in schema["functions"]


async def test_upgrade_to_head_is_idempotent(
    scratch: asyncpg.Connection, make_engine: MakeEngine
) -> None:
    await upgrade_to_head(make_engine())
    schema = await read_schema(scratch)
    run_id = await make_run(scratch)
    await write_with_sql(scratch, run_id, "run_started", status="running")

    await upgrade_to_head(make_engine())
    await upgrade_to_head(make_engine())
    await write_with_sql(scratch, run_id, "phase_changed", phase="after")

    assert await read_versions(scratch) == [HEAD]
    assert await read_schema(scratch) == schema
    assert [event["seq"] for event in await read_events(scratch, run_id)] == [1, 2]


async def test_upgrade_to_head_concurrent_calls_both_succeed(
    scratch_database_url: str, scratch: asyncpg.Connection
) -> None:
    """Two instances starting together: one migrates, the other finds it done.

    Each runs in a process of its own, as two containers would. The test
    holds the migration lock itself until both have queued behind it, so the
    two upgrades really do overlap.
    """
    database = make_url(scratch_database_url).database
    assert database is not None
    await scratch.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    upgrades = [await start_upgrade(scratch_database_url) for _ in range(2)]

    await wait_for_advisory_waiters(
        scratch, database, 2, deadline_seconds=UPGRADE_TIMEOUT_SECONDS
    )
    await scratch.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    outcomes = [await finish_upgrade(process) for process in upgrades]

    assert outcomes == [(0, ""), (0, "")]
    assert await read_versions(scratch) == [HEAD]
    assert len((await read_schema(scratch))["triggers"]) == 4


async def test_downgrade_removes_schema_and_upgrade_restores_it(
    scratch: asyncpg.Connection, make_engine: MakeEngine
) -> None:
    await upgrade_to_head(make_engine())
    migrated = await read_schema(scratch)

    await downgrade_to_base(make_engine())
    emptied = await read_schema(scratch)
    await upgrade_to_head(make_engine())

    assert emptied == {"tables": ["alembic_version"], "functions": [], "triggers": []}
    assert await read_schema(scratch) == migrated


async def test_upgrade_from_counter_continues_each_runs_numbering(
    scratch: asyncpg.Connection, make_engine: MakeEngine
) -> None:
    """Runs with events, an ended run and an empty one, made by the trigger
    that counted on the run's row, carry on under the one that reads the index."""
    await move_to(make_engine(), LAST_SEQ_REVISION)
    busy, ended, empty = [await make_run(scratch) for _ in range(3)]
    for phase in ("a", "b", "c"):
        await write_with_sql(scratch, busy, "phase_changed", phase=phase)
    await write_with_sql(scratch, ended, "run_started", status="running")
    await write_with_sql(scratch, ended, "run_failed", status="failed")

    await upgrade_to_head(make_engine())
    await write_with_sql(scratch, busy, "phase_changed", phase="d")
    await write_with_sql(scratch, empty, "phase_changed", phase="first")
    with pytest.raises(asyncpg.ObjectNotInPrerequisiteStateError):
        await write_with_sql(scratch, ended, "phase_changed", phase="late")

    assert "last_seq" not in await read_run_columns(scratch)
    assert await read_seqs(scratch, busy) == [1, 2, 3, 4]
    assert await read_seqs(scratch, empty) == [1]
    assert await read_seqs(scratch, ended) == [1, 2]
    run = await run_queries.get_run(scratch, busy)
    assert run is not None
    latest = (await read_events(scratch, busy))[-1]
    assert (run.last_seq, run.last_event_id) == (4, latest["id"])


async def test_downgrade_to_counter_restores_it_from_events(
    scratch: asyncpg.Connection, make_engine: MakeEngine
) -> None:
    """Down and up again with events in between: the numbering never breaks."""
    await move_to(make_engine(), LAST_SEQ_REVISION)
    counting_schema = await read_schema(scratch)
    counting_trigger = await read_publish_function(scratch)
    await upgrade_to_head(make_engine())
    run_id = await make_run(scratch)
    for phase in ("a", "b"):
        await write_with_sql(scratch, run_id, "phase_changed", phase=phase)

    await move_to(make_engine(), LAST_SEQ_REVISION, down=True)
    restored_schema = await read_schema(scratch)
    restored_trigger = await read_publish_function(scratch)
    await write_with_sql(scratch, run_id, "phase_changed", phase="c")
    restored_count = await scratch.fetchval(
        "SELECT last_seq FROM runs WHERE id = $1", run_id
    )
    await upgrade_to_head(make_engine())
    await write_with_sql(scratch, run_id, "phase_changed", phase="d")

    assert (restored_schema, restored_trigger) == (counting_schema, counting_trigger)
    assert restored_count == 3
    assert await read_seqs(scratch, run_id) == [1, 2, 3, 4]
