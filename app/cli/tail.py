"""`tail`: one run live in the terminal, or as JSON lines, resumed after any drop."""

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from app.cli.arguments import RunArgument
from app.cli.execution import fail, run_command
from app.client import (
    ResponseError,
    RunEvent,
    RunEventIterator,
    RunEventsClient,
    RunEventsError,
)
from app.config import Settings
from app.ids import RUN_PREFIX, format_id

DEFAULT_URL = "http://127.0.0.1:8000"

# Exit codes: a script can tell how the run ended without parsing anything.
EXIT_SUCCEEDED = 0
EXIT_NOT_FOLLOWED = 1
EXIT_FAILED = 3
EXIT_CANCELLED = 4
OUTCOME_EXIT_CODES = {
    "run_completed": EXIT_SUCCEEDED,
    "run_failed": EXIT_FAILED,
    "run_cancelled": EXIT_CANCELLED,
}

# Often enough for the elapsed time to tick each second without flicker.
REFRESH_SECONDS = 0.5

STATUS_STYLES = {
    "queued": "dim",
    "running": "cyan",
    "succeeded": "bold green",
    "no_winner": "bold yellow",
    "failed": "bold red",
    "cancelled": "bold magenta",
}


def parse_url_argument(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise typer.BadParameter("give the service's http:// or https:// URL")
    return text


KeyOption = Annotated[
    str,
    typer.Option(
        "--key",
        envvar="SELFTUNE_API_KEY",
        show_envvar=True,
        show_default=False,
        help="The organisation's API key.",
    ),
]
UrlOption = Annotated[
    str,
    typer.Option(parser=parse_url_argument, help="The service's base URL."),
]
JsonOption = Annotated[
    bool,
    typer.Option("--json", help="Print each event as one JSON object a line instead."),
]


def tail(
    run: RunArgument,
    key: KeyOption,
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Follow one run live: status, phases, candidates, proposals and the outcome.

    Resumes by itself after a dropped connection, without missing or
    repeating an event. Exit codes: 0 when the run completed (succeeded or
    no_winner), 3 when it failed, 4 when it was cancelled, 1 when it cannot
    be followed (refused key, unknown or foreign run, unreachable service),
    2 for bad usage, 130 on Ctrl-C.
    """
    run_id = format_id(RUN_PREFIX, run)
    exit_code = run_command(
        lambda settings: follow(settings, url, key, run_id, as_json)
    )
    if exit_code != EXIT_SUCCEEDED:
        raise typer.Exit(exit_code)


async def follow(
    settings: Settings, url: str, key: str, run_id: str, as_json: bool
) -> int:
    if settings.log_level != "debug":
        # httpx logs each request at INFO, which would interleave with the view.
        logging.getLogger("httpx").setLevel(logging.WARNING)

    try:
        async with RunEventsClient(url, key) as client, client.follow(run_id) as events:
            if as_json:
                outcome = await print_events(events)
            else:
                outcome = await show_view(events, RunView(run_id))
    except ResponseError as exc:
        fail(f"{exc.detail} ({exc.status_code})")
    except RunEventsError as exc:
        fail(str(exc))

    if outcome is None:
        fail("the stream ended before the run's outcome")
    return OUTCOME_EXIT_CODES[outcome.type]


async def print_events(events: RunEventIterator) -> RunEvent | None:
    """One JSON object a line, as the server sent it; the terminal event."""
    last = None
    async for event in events:
        # typer.echo flushes after each line, so a pipe sees events live.
        typer.echo(event.raw)
        last = event
    return last if last is not None and last.is_terminal else None


async def show_view(events: RunEventIterator, view: "RunView") -> RunEvent | None:
    """Draw the view until the run ends; the terminal event."""
    console = Console()
    with Live(view.render(), console=console, auto_refresh=False) as live:
        # Rendering stays on this loop: the view is never read by another thread.
        ticker = asyncio.create_task(redraw(live, view, events))
        try:
            async for event in events:
                view.apply(event)
                live.update(view.render(), refresh=True)
        except BaseException:
            # Refused before any event: leave no empty view behind the error.
            live.transient = view.started_at is None
            raise
        finally:
            # Not awaited: it is parked in its sleep, and ends there.
            ticker.cancel()
        view.reconnects = events.reconnects
        live.update(view.render(), refresh=True)
    if not console.is_terminal:
        # Rich ends a terminal's view with a newline, but not a file's.
        console.line()
    return view.outcome


async def redraw(live: Live, view: "RunView", events: RunEventIterator) -> None:
    while True:
        await asyncio.sleep(REFRESH_SECONDS)
        view.reconnects = events.reconnects
        live.update(view.render(), refresh=True)


@dataclass
class Candidate:
    id: str
    score: float | None = None
    baseline: float | None = None
    cases: str = ""
    note: str = ""


@dataclass
class Proposal:
    id: str
    candidate_id: str = ""
    improvement: float | None = None
    note: str = ""


@dataclass
class RunView:
    """What `tail` knows of a run so far, from the events it has read."""

    run_id: str
    status: str = "waiting"
    phases: list[str] = field(default_factory=list)
    candidates: dict[str, Candidate] = field(default_factory=dict)
    proposals: dict[str, Proposal] = field(default_factory=dict)
    started_at: datetime | None = None
    outcome: RunEvent | None = None
    reconnects: int = 0

    def apply(self, event: RunEvent) -> None:
        payload = event.payload or {}
        self.started_at = self.started_at or event.created_at
        if event.status is not None:
            self.status = event.status
        if event.phase is not None:
            if event.phase in self.phases:
                self.phases.remove(event.phase)
            self.phases.append(event.phase)
        if event.candidate_id is not None:
            self.candidates[event.candidate_id] = read_candidate(
                event.candidate_id, payload
            )
        if event.proposal_id is not None:
            self.proposals[event.proposal_id] = read_proposal(
                event.proposal_id, payload
            )
        if event.is_terminal:
            self.outcome = event

    def elapsed(self, now: datetime) -> timedelta:
        if self.started_at is None:
            return timedelta(0)
        end = self.outcome.created_at if self.outcome is not None else now
        # The server's clock, not ours, stamped the start: never show less than 0.
        return max(end - self.started_at, timedelta(0))

    def render(self) -> RenderableType:
        parts: list[RenderableType] = [self.render_header()]
        if self.candidates:
            proposed = {proposal.candidate_id for proposal in self.proposals.values()}
            parts.append(render_candidates(self.candidates.values(), proposed))
        if self.proposals:
            parts.append(render_proposals(self.proposals.values()))
        if self.outcome is not None:
            parts.append(render_outcome(self.outcome))
        if self.reconnects:
            parts.append(Text(f"resumed {self.reconnects}× after a drop", "dim"))
        return Group(*parts)

    def render_header(self) -> Text:
        header = Text.assemble(
            (self.run_id, "bold"),
            "  ",
            (self.status, STATUS_STYLES.get(self.status, "")),
            "  ",
            format_elapsed(self.elapsed(datetime.now(UTC))),
        )
        if self.phases:
            header.append("\nphase  ")
            for index, phase in enumerate(self.phases):
                is_current = index == len(self.phases) - 1 and self.outcome is None
                header.append(phase, "bold cyan" if is_current else "dim")
                if index < len(self.phases) - 1:
                    header.append(" › ", "dim")
        return header


def read_candidate(candidate_id: str, payload: dict[str, Any]) -> Candidate:
    passed, total = payload.get("cases_passed"), payload.get("cases_total")
    return Candidate(
        id=candidate_id,
        score=read_number(payload, "score"),
        baseline=read_number(payload, "baseline_score"),
        cases=f"{passed}/{total}" if passed is not None and total else "",
        note=str(payload.get("message", "")),
    )


def read_proposal(proposal_id: str, payload: dict[str, Any]) -> Proposal:
    return Proposal(
        id=proposal_id,
        candidate_id=str(payload.get("candidate_id", "")),
        improvement=read_number(payload, "improvement"),
        note=str(payload.get("message", "")),
    )


def read_number(payload: dict[str, Any], name: str) -> float | None:
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def render_candidates(candidates: Iterable[Candidate], proposed: set[str]) -> Table:
    table = Table(title="candidates", title_justify="left", box=box.SIMPLE, expand=True)
    table.add_column("candidate", no_wrap=True)
    table.add_column("score", justify="right", min_width=5)
    table.add_column("vs base", justify="right", min_width=6)
    table.add_column("cases", justify="right", min_width=5)
    table.add_column("change", ratio=1, no_wrap=True, overflow="ellipsis")
    for candidate in candidates:
        delta = None
        if candidate.score is not None and candidate.baseline is not None:
            delta = candidate.score - candidate.baseline
        name = Text(candidate.id)
        if candidate.id in proposed:
            name.append(" ★", "bold green")
        table.add_row(
            name,
            Text(format_number(candidate.score)),
            Text(format_number(delta, signed=True), delta_style(delta)),
            Text(candidate.cases),
            Text(candidate.note),
        )
    return table


def render_proposals(proposals: Iterable[Proposal]) -> Table:
    table = Table(title="proposals", title_justify="left", box=box.SIMPLE, expand=True)
    table.add_column("proposal", no_wrap=True)
    table.add_column("improvement", justify="right", min_width=6)
    table.add_column("summary", ratio=1, no_wrap=True, overflow="ellipsis")
    for proposal in proposals:
        table.add_row(
            Text(proposal.id),
            Text(format_number(proposal.improvement, signed=True)),
            Text(proposal.note),
        )
    return table


def render_outcome(outcome: RunEvent) -> Text:
    status = outcome.status or outcome.type
    message = (outcome.payload or {}).get("message")
    text = Text.assemble("outcome  ", (status, STATUS_STYLES.get(status, "bold")))
    if message:
        text.append(f"  {message}")
    return text


def delta_style(delta: float | None) -> str:
    if delta is None:
        return ""
    return "green" if delta > 0 else "red"


def format_number(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return ""
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def format_elapsed(elapsed: timedelta) -> str:
    minutes, seconds = divmod(int(elapsed.total_seconds()), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{seconds:02}" if hours else f"{minutes}:{seconds:02}"
