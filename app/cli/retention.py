"""`prune`: drop the event history of runs that ended before a date."""

import datetime
import logging
from typing import Annotated

import typer

from app.cli.execution import connect, run_command
from app.config import Settings
from app.db import retention

logger = logging.getLogger(__name__)


def parse_cutoff(text: str) -> datetime.datetime:
    try:
        cutoff = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a date: use 2026-01-31 or 2026-01-31T12:00:00Z"
        ) from None
    if cutoff.tzinfo is None:
        cutoff = cutoff.replace(tzinfo=datetime.UTC)
    return cutoff


def prune(
    ended_before: Annotated[
        datetime.datetime,
        typer.Option(
            parser=parse_cutoff,
            metavar="DATE",
            help="Prune runs that ended before this date (UTC unless given).",
            show_default=False,
        ),
    ],
) -> None:
    """Remove the events of runs that ended before DATE, in batches.

    Streams and resumes for a pruned run answer 410 Gone. Prints the number
    of runs and events removed.
    """
    runs, events = run_command(lambda settings: prune_runs(settings, ended_before))
    typer.echo(f"pruned {runs} runs, {events} events")


async def prune_runs(
    settings: Settings, ended_before: datetime.datetime
) -> tuple[int, int]:
    async with connect(settings) as conn:
        run_ids = await retention.find_runs_to_prune(conn, ended_before)
        events = 0
        for run_id in run_ids:
            deleted = await retention.prune_run(conn, run_id)
            logger.info("prune.run", extra={"run_id": str(run_id), "events": deleted})
            events += deleted
    return len(run_ids), events
