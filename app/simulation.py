"""A believable Cloud Improve run, played as events over about 30 seconds.

`simulate` and `dev` publish it through the same INSERT any writer uses, so a
client sees what a real run would send it, in real time.
"""

import asyncio
import enum
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from uuid_utils import uuid7

from app.db import events as event_queries
from app.db.engine import Database
from app.ids import format_id

logger = logging.getLogger(__name__)

JsonObject = dict[str, Any]

CANDIDATE_COUNT = 3
EVAL_CASES = 48
GATES = 4
# A winner must beat the baseline by this much, as the real gate demands.
REQUIRED_IMPROVEMENT = 0.02

CANDIDATE_CHANGES = (
    "Asks for the target branch before opening a pull request",
    "Splits the retry guidance into a numbered checklist",
    "Drops the outdated example that contradicted step 3",
)


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    NO_WINNER = "no_winner"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class ScriptedEvent:
    """One event of the script, published `delay_seconds` after the previous one."""

    delay_seconds: float
    type: str
    status: str | None = None
    phase: str | None = None
    candidate_id: str | None = None
    proposal_id: str | None = None
    payload: JsonObject | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    id: str
    revision: int
    score: float
    cases_passed: int
    duration_ms: int
    change: str


def build_lifecycle(
    outcome: Outcome, *, rng: random.Random | None = None
) -> list[ScriptedEvent]:
    """The events of one run ending in `outcome`; delays add up to about 30 s."""
    rng = rng or random.Random()
    baseline = round(rng.uniform(0.62, 0.74), 3)
    candidates = make_candidates(outcome, baseline, rng)

    script = opening_events(baseline)
    if outcome is Outcome.CANCELLED:
        # Cancelled by a user while the second candidate was being scored.
        script += [candidate_event(candidate, baseline) for candidate in candidates[:2]]
        script.append(cancelled_event())
        return script

    script += [candidate_event(candidate, baseline) for candidate in candidates]
    script += selection_events(candidates)
    best = max(candidates, key=lambda candidate: candidate.score)
    if outcome is Outcome.FAILED:
        script.append(failed_event(best))
    elif outcome is Outcome.NO_WINNER:
        script.append(no_winner_event(best, baseline))
    else:
        script += winner_events(best, baseline, rng)
    return script


def make_candidates(
    outcome: Outcome, baseline: float, rng: random.Random
) -> list[Candidate]:
    # With no winner, every candidate stays under the gate's margin.
    if outcome is Outcome.NO_WINNER:
        low, high = baseline - 0.08, baseline + REQUIRED_IMPROVEMENT - 0.005
    else:
        low, high = baseline - 0.03, baseline + 0.15
    candidates = []
    for revision, change in enumerate(CANDIDATE_CHANGES, start=1):
        score = round(min(rng.uniform(low, high), 0.99), 3)
        candidates.append(
            Candidate(
                id=new_runtime_id("cand"),
                revision=revision,
                score=score,
                cases_passed=round(score * EVAL_CASES),
                duration_ms=rng.randint(2_800, 9_500),
                change=change,
            )
        )

    # A succeeding run needs one candidate clear of the gate, whatever the draw.
    best = max(candidates, key=lambda candidate: candidate.score)
    if outcome is not Outcome.NO_WINNER and best.score < baseline + 0.04:
        index = candidates.index(best)
        score = round(baseline + rng.uniform(0.04, 0.12), 3)
        candidates[index] = Candidate(
            id=best.id,
            revision=best.revision,
            score=score,
            cases_passed=round(score * EVAL_CASES),
            duration_ms=best.duration_ms,
            change=best.change,
        )
    return candidates


def opening_events(baseline: float) -> list[ScriptedEvent]:
    return [
        ScriptedEvent(
            0.0,
            "run_enqueued",
            status="queued",
            payload={"message": "Queued for the Cloud Improve runtime"},
        ),
        ScriptedEvent(
            1.5,
            "run_started",
            status="running",
            payload={"message": "Picked up by a runtime worker", "worker": "improve-3"},
        ),
        phase_event(
            0.5,
            "preparing",
            {"message": "Loading the skill and its evaluation set"},
        ),
        phase_event(
            2.5,
            "generating",
            {
                "message": f"Drafting {CANDIDATE_COUNT} candidate revisions",
                "candidates_requested": CANDIDATE_COUNT,
            },
        ),
        phase_event(
            6.0,
            "evaluating",
            {
                "message": f"Scoring candidates on {EVAL_CASES} evaluation cases",
                "eval_cases": EVAL_CASES,
                "baseline_score": baseline,
            },
        ),
    ]


def candidate_event(candidate: Candidate, baseline: float) -> ScriptedEvent:
    return ScriptedEvent(
        4.0,
        "candidate_persisted",
        candidate_id=candidate.id,
        payload={
            "revision": candidate.revision,
            "score": candidate.score,
            "baseline_score": baseline,
            "cases_passed": candidate.cases_passed,
            "cases_total": EVAL_CASES,
            "duration_ms": candidate.duration_ms,
            "message": candidate.change,
        },
    )


def selection_events(candidates: list[Candidate]) -> list[ScriptedEvent]:
    best = max(candidates, key=lambda candidate: candidate.score)
    return [
        phase_event(
            1.5,
            "selecting",
            {
                "message": f"Ranking {len(candidates)} candidates",
                "candidates": len(candidates),
            },
        ),
        phase_event(
            1.5,
            "gating",
            {
                "message": "Checking the best candidate against regression gates",
                "candidate_id": best.id,
                "gates": GATES,
            },
        ),
    ]


def winner_events(
    winner: Candidate, baseline: float, rng: random.Random
) -> list[ScriptedEvent]:
    proposal_id = new_runtime_id("prop")
    improvement = round(winner.score - baseline, 3)
    return [
        ScriptedEvent(
            2.0,
            "proposal_created",
            proposal_id=proposal_id,
            payload={
                "candidate_id": winner.id,
                "score": winner.score,
                "baseline_score": baseline,
                "improvement": improvement,
                "gates_passed": GATES,
                "message": winner.change,
            },
        ),
        phase_event(
            0.5,
            "review",
            {"message": "Proposal ready for review", "proposal_id": proposal_id},
        ),
        ScriptedEvent(
            2.0,
            "run_completed",
            status=Outcome.SUCCEEDED.value,
            payload={
                "message": f"Proposed revision {winner.revision}, "
                f"+{improvement:.3f} over the baseline",
                "winner_candidate_id": winner.id,
                "proposal_id": proposal_id,
                "candidates_evaluated": CANDIDATE_COUNT,
                "duration_ms": rng.randint(29_000, 33_000),
            },
        ),
    ]


def no_winner_event(best: Candidate, baseline: float) -> ScriptedEvent:
    return ScriptedEvent(
        2.0,
        "run_completed",
        status=Outcome.NO_WINNER.value,
        payload={
            "message": "No candidate beat the baseline by the required margin",
            "best_candidate_id": best.id,
            "best_score": best.score,
            "baseline_score": baseline,
            "required_improvement": REQUIRED_IMPROVEMENT,
            "candidates_evaluated": CANDIDATE_COUNT,
        },
    )


def failed_event(best: Candidate) -> ScriptedEvent:
    return ScriptedEvent(
        2.0,
        "run_failed",
        status=Outcome.FAILED.value,
        payload={
            "message": "The regression gate timed out after 3 attempts",
            "error": "gate_timeout",
            "phase": "gating",
            "candidate_id": best.id,
        },
    )


def cancelled_event() -> ScriptedEvent:
    return ScriptedEvent(
        1.5,
        "run_cancelled",
        status=Outcome.CANCELLED.value,
        payload={"message": "Cancelled by a user", "phase": "evaluating"},
    )


def phase_event(delay_seconds: float, phase: str, payload: JsonObject) -> ScriptedEvent:
    return ScriptedEvent(delay_seconds, "phase_changed", phase=phase, payload=payload)


def new_runtime_id(prefix: str) -> str:
    """An id in the runtime's own style (`cand_...`, `prop_...`)."""
    return format_id(prefix, uuid.UUID(str(uuid7())))


async def play_lifecycle(
    database: Database,
    run_id: uuid.UUID,
    script: list[ScriptedEvent],
    *,
    speed: float = 1.0,
    on_published: Callable[[uuid.UUID], None] | None = None,
) -> list[uuid.UUID]:
    """Publish the script's events in order, each after its delay divided by `speed`.

    Each event is its own committed write, as the runtime's would be, so
    clients tailing the run see them arrive one by one.

    Raises:
        EventRejected: the database refused an event (the run has already
            ended, for instance); the events before it stay published.
    """
    started = time.monotonic()
    logger.info("simulation.started", extra={"run_id": run_id, "speed": speed})

    published = []
    for event in script:
        await asyncio.sleep(event.delay_seconds / speed)
        async with database.connection() as conn:
            event_id, seq = await event_queries.publish_event(
                conn,
                run_id,
                event.type,
                status=event.status,
                phase=event.phase,
                candidate_id=event.candidate_id,
                proposal_id=event.proposal_id,
                payload=event.payload,
            )
        logger.debug(
            "simulation.published",
            extra={
                "run_id": run_id,
                "event_id": event_id,
                "seq": seq,
                "type": event.type,
            },
        )
        published.append(event_id)
        if on_published is not None:
            on_published(event_id)

    duration_ms = round((time.monotonic() - started) * 1000)
    logger.info(
        "simulation.finished",
        extra={"run_id": run_id, "events": len(published), "duration_ms": duration_ms},
    )
    return published


async def simulate_run(
    database: Database,
    run_id: uuid.UUID,
    *,
    outcome: Outcome = Outcome.SUCCEEDED,
    speed: float = 1.0,
    on_published: Callable[[uuid.UUID], None] | None = None,
) -> list[uuid.UUID]:
    """Play a fresh lifecycle ending in `outcome` on the run."""
    script = build_lifecycle(outcome)
    return await play_lifecycle(
        database, run_id, script, speed=speed, on_published=on_published
    )
