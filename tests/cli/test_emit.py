"""`emit`: one event through the publish contract."""

import asyncpg
import orjson

from app.db import runs as run_queries
from app.ids import EVENT_PREFIX, RUN_PREFIX, format_id, parse_event_id
from tests.cli.conftest import Cli, error_line, new_uuid, single_line, usage_error
from tests.fixtures.factories import MakeRun, MakeTenant, Publish


async def test_emit_publishes_the_event_and_prints_its_id(
    cli: Cli, db: asyncpg.Connection, make_tenant: MakeTenant, make_run: MakeRun
) -> None:
    run_id = await make_run(await make_tenant())
    payload = {"message": "line one\nline two", "score": 0.82, "nested": {"n": [1]}}

    result = await cli.run(
        "emit",
        format_id(RUN_PREFIX, run_id),
        "candidate_persisted",
        "--candidate-id",
        "cand_1",
        "--payload",
        orjson.dumps(payload).decode(),
    )

    event_id = parse_event_id(single_line(result))
    row = await db.fetchrow(
        "SELECT run_id, type, candidate_id, payload FROM run_events WHERE id = $1",
        event_id,
    )
    assert (row["run_id"], row["type"], row["candidate_id"]) == (
        run_id,
        "candidate_persisted",
        "cand_1",
    )
    assert orjson.loads(row["payload"]) == payload


async def test_emit_status_updates_the_run(
    cli: Cli, db: asyncpg.Connection, make_tenant: MakeTenant, make_run: MakeRun
) -> None:
    run_id = await make_run(await make_tenant())

    result = await cli.run("emit", str(run_id), "run_started", "--status", "running")

    assert result.exit_code == 0, result.stderr
    run = await run_queries.get_run(db, run_id)
    assert run is not None
    assert (run.status, run.last_seq) == ("running", 1)


async def test_emit_with_an_id_uses_it(
    cli: Cli, make_tenant: MakeTenant, make_run: MakeRun
) -> None:
    run_id = await make_run(await make_tenant())
    event_id = new_uuid()

    result = await cli.run(
        "emit",
        str(run_id),
        "phase_changed",
        "--phase",
        "preparing",
        "--id",
        str(event_id),
    )

    assert single_line(result) == format_id(EVENT_PREFIX, event_id)


async def test_emit_same_id_twice_publishes_once(
    cli: Cli, db: asyncpg.Connection, make_tenant: MakeTenant, make_run: MakeRun
) -> None:
    run_id = await make_run(await make_tenant())
    event_id = format_id(EVENT_PREFIX, new_uuid())
    args = (
        "emit",
        str(run_id),
        "phase_changed",
        "--phase",
        "preparing",
        "--id",
        event_id,
    )
    await cli.run(*args)

    result = await cli.run(*args)

    assert "already exists" in error_line(result)
    assert await run_queries.read_last_seq(db, run_id) == 1


async def test_emit_refused_event_exits_with_the_database_words(
    cli: Cli, db: asyncpg.Connection, make_tenant: MakeTenant, make_run: MakeRun
) -> None:
    run_id = await make_run(await make_tenant())

    result = await cli.run("emit", str(run_id), "run_started")

    assert "run_started requires a status" in error_line(result)
    assert await run_queries.read_last_seq(db, run_id) == 0


async def test_emit_unknown_type_is_refused(
    cli: Cli, make_tenant: MakeTenant, make_run: MakeRun
) -> None:
    run_id = await make_run(await make_tenant())

    result = await cli.run("emit", str(run_id), "run_exploded")

    assert "unknown event type" in error_line(result)


async def test_emit_after_the_terminal_event_is_refused(
    cli: Cli, make_tenant: MakeTenant, make_run: MakeRun, publish: Publish
) -> None:
    run_id = await make_run(await make_tenant())
    await publish(run_id, "run_completed")

    result = await cli.run("emit", str(run_id), "phase_changed", "--phase", "review")

    assert "already ended" in error_line(result)


async def test_emit_unknown_run_exits_with_one_line(cli: Cli) -> None:
    run = format_id(RUN_PREFIX, new_uuid())

    result = await cli.run("emit", run, "run_enqueued", "--status", "queued")

    assert run in error_line(result)


async def test_emit_malformed_run_is_a_usage_error(cli: Cli) -> None:
    result = await cli.run("emit", "run_NOTATYPEID", "run_enqueued")

    assert "RUN" in usage_error(result)


async def test_emit_bad_json_payload_is_a_usage_error(
    cli: Cli, db: asyncpg.Connection, make_tenant: MakeTenant, make_run: MakeRun
) -> None:
    run_id = await make_run(await make_tenant())

    result = await cli.run(
        "emit", str(run_id), "phase_changed", "--phase", "x", "--payload", "{oops"
    )

    assert "not valid JSON" in usage_error(result)
    assert await run_queries.read_last_seq(db, run_id) == 0


async def test_emit_non_object_payload_is_a_usage_error(
    cli: Cli, make_tenant: MakeTenant, make_run: MakeRun
) -> None:
    run_id = await make_run(await make_tenant())

    result = await cli.run(
        "emit", str(run_id), "phase_changed", "--phase", "x", "--payload", "[1, 2]"
    )

    assert "must be a JSON object" in usage_error(result)


async def test_emit_malformed_id_is_a_usage_error(
    cli: Cli, make_tenant: MakeTenant, make_run: MakeRun
) -> None:
    run_id = await make_run(await make_tenant())

    result = await cli.run(
        "emit", str(run_id), "phase_changed", "--phase", "x", "--id", "42"
    )

    assert "--id" in usage_error(result)


async def test_emit_payload_numbers_keep_every_digit(
    cli: Cli, db: asyncpg.Connection, make_tenant: MakeTenant, make_run: MakeRun
) -> None:
    """`--payload '{"big":123456789012345678901234567890}'` was stored as
    1.2345678901234568e+29: the CLI parsed it to Python floats first."""
    run_id = await make_run(await make_tenant())
    text = '{"n": 1.000000000000000000001, "big": 123456789012345678901234567890}'

    result = await cli.run(
        "emit", str(run_id), "phase_changed", "--phase", "x", "--payload", text
    )

    stored = await db.fetchval(
        "SELECT payload::text FROM run_events WHERE id = $1",
        parse_event_id(single_line(result)),
    )
    assert stored == text
