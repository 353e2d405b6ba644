"""Retention: `prune` removes old history, and streams for it answer 410 Gone."""

import asyncio
import datetime

import asyncpg
import httpx
from typer.testing import CliRunner

from app.cli.main import app as cli
from tests.fixtures.factories import MakeRun, MakeTenant, Publish, run_typeid
from tests.fixtures.server import LiveServer
from tests.fixtures.sse import auth, open_stream


async def test_prune_removes_ended_runs_and_their_streams_answer_410(
    live_server: LiveServer,
    migrated_database_url: str,
    db: asyncpg.Connection,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish: Publish,
) -> None:
    tenant = await make_tenant()
    old_run, live_run = await make_run(tenant), await make_run(tenant)
    for _ in range(3):
        await publish(old_run, "phase_changed")
    terminal = await publish(old_run, "run_failed")
    await publish(live_run, "run_started")
    await db.execute(
        "UPDATE runs SET ended_at = now() - interval '40 days' WHERE id = $1", old_run
    )
    thirty_days_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)

    result = await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        ["prune", "--ended-before", thirty_days_ago.isoformat()],
        env={"DATABASE_URL": migrated_database_url},
    )
    async with httpx.AsyncClient(timeout=10) as client:
        fresh = await client.get(
            live_server.events_url(run_typeid(old_run)), headers=auth(tenant.key)
        )
        resumed = await client.get(
            live_server.events_url(run_typeid(old_run)),
            headers=auth(tenant.key, **{"Last-Event-ID": terminal.typeid}),
        )
    remaining = await db.fetchval(
        "SELECT count(*) FROM run_events WHERE run_id = $1", old_run
    )

    assert result.exit_code == 0, result.stderr
    assert "pruned 1 runs, 4 events" in result.stdout
    assert remaining == 0
    assert fresh.status_code == resumed.status_code == 410
    assert fresh.json()["code"] == "run_pruned"
    async with open_stream(
        live_server.events_url(run_typeid(live_run)), tenant.key
    ) as reader:
        assert (await reader.next_event() or {}).get("type") == "run_started"


def test_prune_with_a_bad_date_is_a_usage_error(migrated_database_url: str) -> None:
    result = CliRunner().invoke(
        cli,
        ["prune", "--ended-before", "last tuesday"],
        env={"DATABASE_URL": migrated_database_url},
    )

    assert result.exit_code == 2
    assert "not a date" in result.stderr


async def test_stream_headers_tell_where_the_run_stands(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish: Publish,
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    await publish(run_id, "run_enqueued")
    latest = await publish(run_id, "run_started")

    async with open_stream(
        live_server.events_url(run_typeid(run_id)), tenant.key
    ) as reader:
        headers = reader.response.headers

    assert headers["x-run-status"] == "running"
    assert headers["x-run-last-event-id"] == latest.typeid
