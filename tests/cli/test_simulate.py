"""`simulate` and the lifecycle script it plays (app/simulation.py)."""

import random

import asyncpg
import orjson
import pytest

from app.db import runs as run_queries
from app.ids import RUN_PREFIX, format_id, parse_event_id
from app.simulation import REQUIRED_IMPROVEMENT, Outcome, build_lifecycle
from tests.cli.conftest import Cli, error_line, new_uuid, usage_error
from tests.fixtures.factories import MakeRun, MakeTenant, Publish

TERMINAL = {
    Outcome.SUCCEEDED: ("run_completed", "succeeded"),
    Outcome.NO_WINNER: ("run_completed", "no_winner"),
    Outcome.FAILED: ("run_failed", "failed"),
    Outcome.CANCELLED: ("run_cancelled", "cancelled"),
}

ALL_PHASES = ["preparing", "generating", "evaluating", "selecting", "gating", "review"]


@pytest.mark.parametrize("outcome", list(Outcome))
async def test_simulate_publishes_a_lifecycle_ending_in_the_outcome(
    cli: Cli,
    db: asyncpg.Connection,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    outcome: Outcome,
) -> None:
    run_id = await make_run(await make_tenant())

    result = await cli.run(
        "simulate",
        format_id(RUN_PREFIX, run_id),
        "--speed",
        "1000",
        "--outcome",
        outcome.value,
    )

    assert result.exit_code == 0, result.stderr
    printed = [parse_event_id(line) for line in result.stdout.splitlines()]
    rows = await db.fetch(
        "SELECT id, type, status FROM run_events WHERE run_id = $1 ORDER BY seq",
        run_id,
    )
    assert printed == [row["id"] for row in rows]
    assert [row["type"] for row in rows[:2]] == ["run_enqueued", "run_started"]
    assert (rows[-1]["type"], rows[-1]["status"]) == TERMINAL[outcome]
    run = await run_queries.get_run(db, run_id)
    assert run is not None
    assert run.has_ended


async def test_simulate_succeeded_walks_every_phase_and_proposes_the_best(
    cli: Cli, db: asyncpg.Connection, make_tenant: MakeTenant, make_run: MakeRun
) -> None:
    run_id = await make_run(await make_tenant())

    result = await cli.run("simulate", str(run_id), "--speed", "1000")

    assert result.exit_code == 0, result.stderr
    rows = await db.fetch(
        "SELECT type, phase, candidate_id, proposal_id, payload FROM run_events"
        " WHERE run_id = $1 ORDER BY seq",
        run_id,
    )
    assert 12 <= len(rows) <= 16
    assert [row["phase"] for row in rows if row["phase"]] == ALL_PHASES
    candidates = [row for row in rows if row["type"] == "candidate_persisted"]
    assert len(candidates) == 3
    scores = {
        row["candidate_id"]: orjson.loads(row["payload"])["score"] for row in candidates
    }
    proposals = [row for row in rows if row["type"] == "proposal_created"]
    assert len(proposals) == 1
    proposal = orjson.loads(proposals[0]["payload"])
    assert proposal["candidate_id"] == max(scores, key=scores.__getitem__)
    assert proposals[0]["proposal_id"].startswith("prop_")


async def test_simulate_unknown_run_exits_with_one_line(cli: Cli) -> None:
    run = format_id(RUN_PREFIX, new_uuid())

    result = await cli.run("simulate", run, "--speed", "1000")

    assert run in error_line(result)


async def test_simulate_ended_run_is_refused_without_new_events(
    cli: Cli,
    db: asyncpg.Connection,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish: Publish,
) -> None:
    run_id = await make_run(await make_tenant())
    await publish(run_id, "run_cancelled")

    result = await cli.run("simulate", str(run_id), "--speed", "1000")

    assert "already ended" in error_line(result)
    assert await run_queries.read_last_seq(db, run_id) == 1


async def test_simulate_zero_speed_is_a_usage_error(cli: Cli) -> None:
    result = await cli.run("simulate", str(new_uuid()), "--speed", "0")

    assert "--speed" in usage_error(result)


async def test_simulate_unknown_outcome_is_a_usage_error(cli: Cli) -> None:
    result = await cli.run("simulate", str(new_uuid()), "--outcome", "exploded")

    assert "--outcome" in usage_error(result)


def test_lifecycle_takes_about_thirty_seconds_at_speed_one() -> None:
    script = build_lifecycle(Outcome.SUCCEEDED)

    total = sum(event.delay_seconds for event in script)

    assert 25 <= total <= 35
    assert 12 <= len(script) <= 16


@pytest.mark.parametrize("seed", range(20))
def test_lifecycle_succeeded_winner_clears_the_gate(seed: int) -> None:
    script = build_lifecycle(Outcome.SUCCEEDED, rng=random.Random(seed))

    proposal = next(event for event in script if event.type == "proposal_created")

    assert proposal.payload is not None
    assert proposal.payload["improvement"] >= REQUIRED_IMPROVEMENT


@pytest.mark.parametrize("seed", range(20))
def test_lifecycle_no_winner_keeps_every_candidate_under_the_gate(seed: int) -> None:
    script = build_lifecycle(Outcome.NO_WINNER, rng=random.Random(seed))

    candidates = [event for event in script if event.type == "candidate_persisted"]

    assert len(candidates) == 3
    assert not any(event.type == "proposal_created" for event in script)
    for event in candidates:
        assert event.payload is not None
        margin = event.payload["score"] - event.payload["baseline_score"]
        assert margin < REQUIRED_IMPROVEMENT
