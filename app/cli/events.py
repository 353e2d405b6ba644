"""`emit` and `simulate`: publish events the way the Cloud Improve runtime does."""

import uuid
from typing import Annotated, Any

import typer

from app.cli.arguments import (
    RunArgument,
    parse_event_argument,
    parse_payload_argument,
)
from app.cli.execution import connect, open_database, run_command
from app.config import Settings
from app.db import events as event_queries
from app.db import runs as run_queries
from app.errors import NotFound
from app.ids import EVENT_PREFIX, RUN_PREFIX, format_id
from app.simulation import Outcome, simulate_run

EVENT_TYPES_HELP = (
    "The event type: run_enqueued, run_started, phase_changed, "
    "candidate_persisted, proposal_created, run_completed, run_failed "
    "or run_cancelled."
)


def emit(
    run: RunArgument,
    event_type: Annotated[
        str, typer.Argument(metavar="TYPE", help=EVENT_TYPES_HELP, show_default=False)
    ],
    status: Annotated[
        str | None, typer.Option(help="Required by run_* events.")
    ] = None,
    phase: Annotated[
        str | None, typer.Option(help="Required by phase_changed.")
    ] = None,
    candidate_id: Annotated[
        str | None, typer.Option(help="Required by candidate_persisted.")
    ] = None,
    proposal_id: Annotated[
        str | None, typer.Option(help="Required by proposal_created.")
    ] = None,
    payload: Annotated[
        str | None,
        typer.Option(
            parser=parse_payload_argument,
            metavar="JSON",
            help="A JSON object sent with the event as it is.",
        ),
    ] = None,
    event_id: Annotated[
        uuid.UUID | None,
        typer.Option(
            "--id",
            parser=parse_event_argument,
            metavar="UUID",
            help="The event's id, so that a retried emit cannot publish twice.",
        ),
    ] = None,
) -> None:
    """Publish one event to a run and print its id.

    The database checks the event against the publish contract and refuses
    it, changing nothing, when it breaks a rule.
    """
    published = run_command(
        lambda settings: publish(
            settings,
            run,
            event_type,
            status=status,
            phase=phase,
            candidate_id=candidate_id,
            proposal_id=proposal_id,
            payload=payload,
            event_id=event_id,
        )
    )
    typer.echo(format_id(EVENT_PREFIX, published))


def simulate(
    run: RunArgument,
    speed: Annotated[
        float,
        typer.Option(
            min=0.01,
            help="How many times faster than real time: the run takes "
            "about 30 s at 1, 3 s at 10.",
        ),
    ] = 1.0,
    outcome: Annotated[
        Outcome, typer.Option(help="How the run ends.")
    ] = Outcome.SUCCEEDED,
) -> None:
    """Publish a realistic run lifecycle over time, printing each event id."""
    run_command(lambda settings: play(settings, run, speed, outcome))


async def publish(
    settings: Settings,
    run_id: uuid.UUID,
    event_type: str,
    *,
    status: str | None,
    phase: str | None,
    candidate_id: str | None,
    proposal_id: str | None,
    payload: str | None,
    event_id: uuid.UUID | None,
) -> uuid.UUID:
    async with connect(settings) as conn:
        await ensure_run_exists(conn, run_id)
        published_id, _ = await event_queries.publish_event(
            conn,
            run_id,
            event_type,
            status=status,
            phase=phase,
            candidate_id=candidate_id,
            proposal_id=proposal_id,
            payload=payload,
            event_id=event_id,
        )
        return published_id


async def play(
    settings: Settings, run_id: uuid.UUID, speed: float, outcome: Outcome
) -> None:
    async with open_database(settings) as database:
        async with database.connection() as conn:
            await ensure_run_exists(conn, run_id)
        await simulate_run(
            database,
            run_id,
            outcome=outcome,
            speed=speed,
            on_published=print_event_id,
        )


async def ensure_run_exists(conn: Any, run_id: uuid.UUID) -> None:
    if await run_queries.get_run(conn, run_id) is None:
        raise NotFound(f"no run has the id {format_id(RUN_PREFIX, run_id)}")


def print_event_id(event_id: uuid.UUID) -> None:
    typer.echo(format_id(EVENT_PREFIX, event_id))
