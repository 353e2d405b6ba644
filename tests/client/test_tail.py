"""`selftune-events tail` against the live server, through Typer's CliRunner.

The command runs its own event loop with asyncio.run, so the runner works in
a thread while the test's loop keeps publishing and relaying.
"""

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from typer.testing import CliRunner, Result

from app.cli.main import app
from app.db import events as event_queries
from app.db.engine import Database, create_engine
from app.ids import EVENT_PREFIX, RUN_PREFIX, format_id
from app.simulation import Outcome, simulate_run
from tests.client.conftest import OUTCOMES, PublishLifecycle
from tests.client.relay import start_relay
from tests.fixtures.factories import MakeRun, MakeTenant, run_typeid, seed_run
from tests.fixtures.server import LiveServer

IsolatedServer = Callable[..., Awaitable[tuple[LiveServer, str]]]

TIMEOUT_SECONDS = 30.0


async def run_tail(*args: str, **env: str | None) -> Result:
    environment: dict[str, str | None] = {
        "LOG_LEVEL": "warning",
        "SELFTUNE_API_KEY": None,
        "COLUMNS": "120",
        **env,
    }
    runner = CliRunner()
    invocation = asyncio.to_thread(
        lambda: runner.invoke(
            app, ["tail", *args], env=environment, catch_exceptions=False
        )
    )
    return await asyncio.wait_for(invocation, TIMEOUT_SECONDS)


async def publish_seeded(
    conn: asyncpg.Connection,
    run_id: uuid.UUID,
    event_type: str,
    *,
    status: str | None = None,
    phase: str | None = None,
) -> str:
    event_id, _ = await event_queries.publish_event(
        conn, run_id, event_type, status=status, phase=phase
    )
    return format_id(EVENT_PREFIX, event_id)


def printed_ids(result: Result) -> list[str]:
    return [json.loads(line)["id"] for line in result.stdout.splitlines()]


@pytest.mark.parametrize(
    ("outcome", "exit_code"),
    [("succeeded", 0), ("no_winner", 0), ("failed", 3), ("cancelled", 4)],
)
async def test_tail_json_prints_every_event_and_exits_by_outcome(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish_lifecycle: PublishLifecycle,
    outcome: str,
    exit_code: int,
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    published = await publish_lifecycle(run_id, outcome)

    result = await run_tail(
        run_typeid(run_id), "--key", tenant.key, "--url", live_server.base_url, "--json"
    )

    assert result.exit_code == exit_code, result.stderr
    assert printed_ids(result) == [event.typeid for event in published]
    assert json.loads(result.stdout.splitlines()[-1])["type"] == OUTCOMES[outcome][0]
    assert result.stderr == ""


async def test_tail_follows_a_simulated_run_live(
    live_server: LiveServer,
    migrated_database_url: str,
    make_tenant: MakeTenant,
    make_run: MakeRun,
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    database = Database(create_engine(migrated_database_url, pool_size=1))

    tail = asyncio.create_task(
        run_tail(
            str(run_id), "--key", tenant.key, "--url", live_server.base_url, "--json"
        )
    )
    try:
        published = await simulate_run(
            database, run_id, outcome=Outcome.NO_WINNER, speed=30
        )
    finally:
        await database.dispose()
    result = await tail

    assert result.exit_code == 0, result.stderr
    assert printed_ids(result) == [format_id(EVENT_PREFIX, id_) for id_ in published]


async def test_tail_view_shows_phases_candidates_proposals_and_outcome(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish_lifecycle: PublishLifecycle,
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    await publish_lifecycle(run_id, "succeeded")

    result = await run_tail(
        run_typeid(run_id), "--key", tenant.key, "--url", live_server.base_url
    )

    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [run_typeid(run_id), "succeeded", "0:00"]
    assert lines[1].split() == ["phase", "generating", "›", "evaluating"]
    candidate_a = next(line for line in lines if "cand_a" in line).split()
    assert candidate_a == ["cand_a", "★", "0.810", "+0.110"]
    candidate_b = next(line for line in lines if "cand_b" in line).split()
    assert candidate_b == ["cand_b", "0.640", "-0.060"]
    assert next(line for line in lines if "prop_a" in line).split() == [
        "prop_a",
        "+0.110",
    ]
    assert lines[-1].split() == ["outcome", "succeeded", "ended:", "succeeded"]
    assert result.stderr == ""


async def test_tail_reads_the_key_from_the_environment(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish_lifecycle: PublishLifecycle,
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    published = await publish_lifecycle(run_id, "failed")

    result = await run_tail(
        run_typeid(run_id),
        "--url",
        live_server.base_url,
        "--json",
        SELFTUNE_API_KEY=tenant.key,
    )

    assert result.exit_code == 3, result.stderr
    assert printed_ids(result) == [event.typeid for event in published]


@pytest.mark.parametrize(
    ("refusal", "status"),
    [
        ("unknown_key", 401),
        ("foreign_run", 403),
        ("unknown_run", 404),
        ("no_runtime", 503),
    ],
)
async def test_tail_refused_prints_one_line_and_exits_one(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    refusal: str,
    status: int,
) -> None:
    owner = await make_tenant(has_runtime=refusal != "no_runtime")
    run = run_typeid(await make_run(owner))
    key = owner.key
    if refusal == "unknown_key":
        key = "st_test_" + "x" * 40
    elif refusal == "foreign_run":
        key = (await make_tenant("stranger")).key
    elif refusal == "unknown_run":
        run = format_id(RUN_PREFIX, uuid.uuid4())

    result = await run_tail(run, "--key", key, "--url", live_server.base_url)

    assert (result.exit_code, result.stdout) == (1, "")
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert lines[0].endswith(f"({status})")
    assert key not in result.stderr


async def test_tail_resumes_by_itself_after_a_drop(
    isolated_server: IsolatedServer,
) -> None:
    """The relay cuts the first connection inside the third event; the view
    resumes after the server's 50 ms `retry:` and prints each event once."""
    server, dsn = await isolated_server(retry_ms=50)
    admin = await asyncpg.connect(dsn)
    try:
        key, run_id = await seed_run(admin)
        event_ids = [
            await publish_seeded(admin, run_id, "run_enqueued", status="queued"),
            await publish_seeded(admin, run_id, "run_started", status="running"),
            await publish_seeded(admin, run_id, "phase_changed", phase="generating"),
            await publish_seeded(admin, run_id, "run_completed", status="succeeded"),
        ]
    finally:
        await admin.close()

    async with start_relay(server.server.config.port) as relay:
        relay.cut_after = f"id: {event_ids[2]}\nevent: ".encode()
        url = f"http://127.0.0.1:{relay.port}"
        result = await run_tail(
            run_typeid(run_id), "--key", key, "--url", url, "--json"
        )

    assert result.exit_code == 0, result.stderr
    assert printed_ids(result) == event_ids
    assert relay.connections == 2


async def test_tail_with_a_url_that_is_not_http_is_a_usage_error() -> None:
    result = await run_tail("run_x", "--key", "k", "--url", "127.0.0.1:8000")

    assert result.exit_code == 2
    assert result.stdout == ""


async def test_tail_help_names_its_exit_codes() -> None:
    result = await run_tail("--help")

    assert result.exit_code == 0
    words = " ".join(result.stdout.split())
    assert "0 when the run completed" in words
    assert "3 when it failed" in words
    assert "4 when it was cancelled" in words
    assert "SELFTUNE_API_KEY" in words
