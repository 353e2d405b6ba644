"""What the OpenAPI document says about the events route: the stream, its
events, its headers and every error body."""

import datetime
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

EVENTS_PATH = "/api/v1/improve-runs/{run_id}/events"

EventType = Literal[
    "run_enqueued",
    "run_started",
    "phase_changed",
    "candidate_persisted",
    "proposal_created",
    "run_completed",
    "run_failed",
    "run_cancelled",
]


class RunEvent(BaseModel):
    """The JSON object in each message's `data:` line."""

    id: str = Field(description="The event's id (`evt_…`); also the `id:` field.")
    run_id: str = Field(description="The run (`run_…`).")
    org_id: str = Field(description="The run's organisation (`org_…`).")
    type: EventType = Field(description="Also the message's `event:` field.")
    status: str | None = Field(
        default=None,
        description="run_enqueued: queued; run_started: running; run_completed: "
        "succeeded or no_winner; run_failed: failed; run_cancelled: cancelled. "
        "Absent on other types.",
    )
    phase: str | None = Field(default=None, description="phase_changed only.")
    candidate_id: str | None = Field(
        default=None, description="candidate_persisted only."
    )
    proposal_id: str | None = Field(default=None, description="proposal_created only.")
    payload: dict[str, Any] | None = Field(
        default=None, description="The runtime's JSON object, exactly as stored."
    )
    created_at: datetime.datetime = Field(description="ISO 8601, UTC, `Z` suffix.")


class ErrorBody(BaseModel):
    detail: str = Field(description="What is wrong and what to do, in words.")
    code: str = Field(description="A stable machine-readable reason.")


EXAMPLE_STREAM = (
    "retry: 3000\n\n"
    "id: evt_01jd8x0000000000000000000a\nevent: run_started\n"
    'data: {"id":"evt_01jd8x0000000000000000000a","run_id":"run_01jd8w00000000000'
    '00000000a","org_id":"org_01jd8v0000000000000000000a","type":"run_started",'
    '"status":"running","created_at":"2026-04-17T10:00:09.120512Z"}\n\n'
    "id: evt_01jd8x0000000000000000000b\nevent: phase_changed\n"
    'data: {"id":"evt_01jd8x0000000000000000000b","run_id":"run_01jd8w00000000000'
    '00000000a","org_id":"org_01jd8v0000000000000000000a","type":"phase_changed",'
    '"phase":"generating","created_at":"2026-04-17T10:00:10.123456Z"}\n\n'
    ": ping\n\n"
)

ERROR_EXAMPLES = {
    400: ("invalid_cursor", "the cursor is not an event of this run; start again"),
    401: ("not_authenticated", "the API key is not valid: it is unknown or revoked"),
    403: ("run_forbidden", "this improve run belongs to another organisation"),
    404: ("run_not_found", "no improve run with this id"),
    410: ("run_pruned", "this run's event history is no longer kept"),
    429: ("too_many_streams", "your organisation has too many open event streams"),
    503: ("runtime_unavailable", "Cloud Improve is not available for this org"),
}


def describe_events_responses() -> dict[int | str, dict[str, Any]]:
    """The `responses` of the events route, errors included."""
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    responses: dict[int | str, dict[str, Any]] = {
        200: {
            "description": "The run's events as Server-Sent Events: `retry:` "
            "first, then one message per event (`id:`, `event:`, one `data:` line "
            "of compact JSON, see the RunEvent schema), `: ping` comments while "
            "idle. The body ends after the terminal event.",
            "content": {
                "text/event-stream": {
                    "schema": {"type": "string"},
                    "example": EXAMPLE_STREAM,
                    "x-event-data": {"$ref": "#/components/schemas/RunEvent"},
                }
            },
            "headers": {
                "X-Run-Status": {
                    "description": "The run's status when the stream opened.",
                    "schema": {"type": "string"},
                },
                "X-Run-Last-Event-Id": {
                    "description": "The run's latest event id when the stream "
                    "opened; absent before its first event.",
                    "schema": {"type": "string"},
                },
                "Cache-Control": {"schema": {"type": "string", "example": "no-store"}},
                "X-Accel-Buffering": {"schema": {"type": "string", "example": "no"}},
            },
        },
        204: {
            "description": "The cursor is the run's terminal event: nothing "
            "follows it. A browser EventSource stops reconnecting."
        },
    }
    for status, (code, detail) in ERROR_EXAMPLES.items():
        responses[status] = {
            "description": detail,
            "content": {
                "application/json": {
                    "schema": error_ref,
                    "example": {"detail": detail, "code": code},
                }
            },
        }
    responses[401]["headers"] = {
        "WWW-Authenticate": {"schema": {"type": "string", "example": "Bearer"}}
    }
    for status in (429, 503):
        responses[status]["headers"] = {
            "Retry-After": {"description": "Seconds.", "schema": {"type": "integer"}}
        }
    return responses


def install_openapi(app: FastAPI) -> None:
    """Add the event and error schemas the responses refer to."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                routes=app.routes,
            )
            # Every parameter of the events route is a plain string, so FastAPI's
            # generic 422 can never happen there; SPEC answers 404 or 400.
            events = schema["paths"][EVENTS_PATH]["get"]
            events["responses"].pop("422", None)
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (RunEvent, ErrorBody):
                schemas[model.__name__] = model.model_json_schema(
                    ref_template="#/components/schemas/{model}"
                )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]
