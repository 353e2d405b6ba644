"""The events route: every check of SPEC's table first, then the stream."""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from app.api.deps import Caller, CallerDep, ServicesDep
from app.api.openapi import describe_events_responses
from app.db import events as event_queries
from app.db import runs as run_queries
from app.db.runs import Run
from app.errors import (
    InvalidCursor,
    RunForbidden,
    RunNotFound,
    RunPruned,
    TooManyStreams,
)
from app.ids import EVENT_PREFIX, format_id, parse_event_id, parse_run_id
from app.streaming.response import RunEventsResponse
from app.streaming.stream import RunStream, StreamOptions

router = APIRouter()

RUN_NOT_FOUND = "no improve run with this id"
RUN_FORBIDDEN = "this improve run belongs to another organisation"
# The same words for an unknown id, another run's event and another
# organisation's event: the answer confirms nothing about other runs.
INVALID_CURSOR = (
    "the cursor is not an event of this run; "
    "start again without Last-Event-ID or cursor to read from the first event"
)

TOKEN_FOR_ANOTHER_RUN = "this read token is for another run; mint one for this run"
RUN_PRUNED = (
    "this run's event history is no longer kept: it ended before the retention cut-off"
)

# A malformed run id is looked up as this id, which no run has.
NO_SUCH_RUN = uuid.UUID(int=0)

CursorQuery = Annotated[
    str | None,
    Query(
        description="Resume strictly after this event id; for clients that "
        "cannot set the Last-Event-ID header, which wins when both are sent."
    ),
]


@router.get(
    "/api/v1/improve-runs/{run_id}/events",
    response_class=Response,
    responses=describe_events_responses(),
)
async def follow_run_events(
    run_id: str,
    request: Request,
    caller: CallerDep,
    services: ServicesDep,
    cursor: CursorQuery = None,
) -> Response:
    """Follow an improve run's events live, as Server-Sent Events.

    The stream replays the run's events after the resume cursor, then sends
    new ones as they are committed, and ends after the run's terminal event.
    Resume after a disconnect with `Last-Event-ID` set to the last `id:`
    received.
    """
    cursor_text = choose_cursor(request.headers.get("last-event-id"), cursor)
    run_uuid = parse_run_id(run_id)

    async with services.database.connection() as conn:
        run = await load_run_for(conn, caller, run_uuid)
        after_seq = 0
        if cursor_text is not None:
            event_uuid = parse_event_id(cursor_text)
            found = None
            if event_uuid is not None:
                found = await event_queries.find_event_in_run(conn, run.id, event_uuid)
            if found is None:
                raise InvalidCursor(INVALID_CURSOR)
            after_seq, event_type = found
            if event_type in event_queries.TERMINAL_TYPES:
                # Nothing follows a terminal event; 204 tells EventSource to stop.
                return Response(status_code=204)

    if not services.slots.try_acquire(run.org_id):
        raise TooManyStreams(
            "your organisation has too many open event streams on this server "
            f"(at most {services.slots.limit_per_org}); close some and retry"
        )

    settings = services.settings
    stream = RunStream(
        run_id=run.id,
        org_id=run.org_id,
        after_seq=after_seq,
        database=services.database,
        feeds=services.feeds,
        options=StreamOptions(
            retry_ms=settings.retry_ms,
            replay_page_size=settings.replay_page_size,
            max_buffered_events=settings.stream_buffer_events,
        ),
        on_close=lambda: services.slots.release(run.org_id),
    )
    return RunEventsResponse(
        stream,
        supervisor=services.supervisor,
        headers=describe_run_state(run),
    )


async def load_run_for(conn: Any, caller: Caller, run_uuid: uuid.UUID | None) -> Run:
    """Checks 3 and 4 of SPEC's table, then the two this service adds.

    A malformed id is looked up like any other, so that every 404 costs the
    same query as a 403.
    """
    run = await run_queries.get_run(conn, run_uuid or NO_SUCH_RUN)
    if run is None:
        raise RunNotFound(RUN_NOT_FOUND)
    if run.org_id != caller.org_id:
        raise RunForbidden(RUN_FORBIDDEN)
    if caller.token_run_id is not None and caller.token_run_id != run.id:
        raise RunForbidden(TOKEN_FOR_ANOTHER_RUN)
    if run.is_pruned:
        raise RunPruned(RUN_PRUNED)
    return run


def describe_run_state(run: Run) -> dict[str, str]:
    """Where the run stands as the stream opens, before its first frame."""
    headers = {"X-Run-Status": run.status}
    if run.last_event_id is not None:
        headers["X-Run-Last-Event-Id"] = format_id(EVENT_PREFIX, run.last_event_id)
    return headers


def choose_cursor(last_event_id: str | None, cursor: str | None) -> str | None:
    """SPEC's cursor rules: the header wins, and an empty value means none."""
    for candidate in (last_event_id, cursor):
        if candidate is not None and candidate.strip():
            return candidate.strip()
    return None
