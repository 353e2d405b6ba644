"""`orgs create` and `runs create`."""

import asyncpg

from app.db import runs as run_queries
from app.ids import ORG_PREFIX, format_id, parse_org_id, parse_run_id
from tests.cli.conftest import Cli, error_line, new_uuid, single_line, usage_error
from tests.fixtures.factories import MakeTenant


async def test_orgs_create_prints_the_new_org_id(
    cli: Cli, db: asyncpg.Connection
) -> None:
    result = await cli.run("orgs", "create", "Acme Robotics")

    org_id = parse_org_id(single_line(result))
    assert org_id is not None
    row = await db.fetchrow(
        "SELECT name, has_runtime FROM organisations WHERE id = $1", org_id
    )
    assert (row["name"], row["has_runtime"]) == ("Acme Robotics", True)


async def test_orgs_create_no_runtime_stores_an_org_without_runtime(
    cli: Cli, db: asyncpg.Connection
) -> None:
    result = await cli.run("orgs", "create", "Nimbus", "--no-runtime")

    org_id = parse_org_id(single_line(result))
    has_runtime = await db.fetchval(
        "SELECT has_runtime FROM organisations WHERE id = $1", org_id
    )
    assert has_runtime is False


async def test_orgs_create_blank_name_is_a_usage_error(cli: Cli) -> None:
    result = await cli.run("orgs", "create", "  ")

    assert "must not be empty" in usage_error(result)


async def test_orgs_create_bad_config_exits_with_one_line_and_writes_nothing(
    cli: Cli, db: asyncpg.Connection
) -> None:
    result = await cli.run("orgs", "create", "Bad Config Ltd", HEARTBEAT_SECONDS="abc")

    assert "HEARTBEAT_SECONDS" in error_line(result)
    count = await db.fetchval(
        "SELECT count(*) FROM organisations WHERE name = 'Bad Config Ltd'"
    )
    assert count == 0


async def test_orgs_create_unsupported_database_url_exits_with_one_line(
    cli: Cli,
) -> None:
    result = await cli.run("orgs", "create", "x", DATABASE_URL="mysql://localhost/x")

    assert "DATABASE_URL" in error_line(result)


async def test_orgs_create_without_database_url_exits_with_one_line(
    cli: Cli,
) -> None:
    result = await cli.run("orgs", "create", "x", DATABASE_URL=None)

    assert "DATABASE_URL is not set" in error_line(result)


async def test_orgs_create_before_migrate_says_to_migrate(
    cli: Cli, empty_database_url: str
) -> None:
    result = await cli.run("orgs", "create", "Early", DATABASE_URL=empty_database_url)

    assert "selftune-events migrate" in error_line(result)


async def test_runs_create_prints_a_queued_run_without_events(
    cli: Cli, db: asyncpg.Connection, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant()

    result = await cli.run(
        "runs", "create", "--org", format_id(ORG_PREFIX, tenant.org_id)
    )

    run_id = parse_run_id(single_line(result))
    assert run_id is not None
    run = await run_queries.get_run(db, run_id)
    assert run is not None
    assert (run.org_id, run.status, run.last_seq) == (tenant.org_id, "queued", 0)


async def test_runs_create_accepts_the_org_uuid(
    cli: Cli, db: asyncpg.Connection, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant()

    result = await cli.run("runs", "create", "--org", str(tenant.org_id).upper())

    run_id = parse_run_id(single_line(result))
    assert run_id is not None
    run = await run_queries.get_run(db, run_id)
    assert run is not None
    assert run.org_id == tenant.org_id


async def test_runs_create_unknown_org_exits_without_writing(
    cli: Cli, db: asyncpg.Connection
) -> None:
    unknown = format_id(ORG_PREFIX, new_uuid())
    runs_before = await db.fetchval("SELECT count(*) FROM runs")

    result = await cli.run("runs", "create", "--org", unknown)

    assert unknown in error_line(result)
    assert await db.fetchval("SELECT count(*) FROM runs") == runs_before


async def test_runs_create_malformed_org_is_a_usage_error(cli: Cli) -> None:
    result = await cli.run("runs", "create", "--org", "run_01jd8x0000000000000000000")

    assert "--org" in usage_error(result)
