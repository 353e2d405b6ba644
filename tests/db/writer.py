"""The two ways a writer publishes: SPEC's plain INSERT, and app.db.events.

Both take the same arguments, so one test can hold either to the contract;
a refusal comes back as the SQLSTATE and the words the writer was given.
"""

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
import pytest

from app.db.events import publish_event
from app.errors import EventRejected

# Opaque JSON, as a writer hands it over.
JSONValue = Any

# SPEC section 3, word for word: the writer's whole interface.
CONTRACT_INSERT = """
INSERT INTO run_events (run_id, type, status, phase, candidate_id, proposal_id, payload, id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8);
"""  # noqa: E501

EVENT_COLUMNS = (
    "id, run_id, org_id, seq, type, status, phase, candidate_id, proposal_id,"
    " payload, created_at"
)


class Write(Protocol):
    async def __call__(
        self,
        conn: asyncpg.Connection,
        run_id: uuid.UUID,
        event_type: str,
        *,
        status: str | None = None,
        phase: str | None = None,
        candidate_id: str | None = None,
        proposal_id: str | None = None,
        payload: JSONValue = None,
        event_id: uuid.UUID | None = None,
    ) -> None: ...


@dataclass(frozen=True)
class Refusal:
    """What a writer learns when the database will not store its event."""

    sqlstate: str
    # Everything the writer is told: the message and, if any, the hint.
    message: str


Refuse = Callable[..., Awaitable[Refusal]]


async def write_with_sql(
    conn: asyncpg.Connection,
    run_id: uuid.UUID,
    event_type: str,
    *,
    status: str | None = None,
    phase: str | None = None,
    candidate_id: str | None = None,
    proposal_id: str | None = None,
    payload: JSONValue = None,
    event_id: uuid.UUID | None = None,
) -> None:
    """Publish as a runtime in any language would: the INSERT and nothing else."""
    encoded_payload = None if payload is None else json.dumps(payload)
    await conn.execute(
        CONTRACT_INSERT,
        run_id,
        event_type,
        status,
        phase,
        candidate_id,
        proposal_id,
        encoded_payload,
        event_id,
    )


async def write_with_python(
    conn: asyncpg.Connection,
    run_id: uuid.UUID,
    event_type: str,
    *,
    status: str | None = None,
    phase: str | None = None,
    candidate_id: str | None = None,
    proposal_id: str | None = None,
    payload: JSONValue = None,
    event_id: uuid.UUID | None = None,
) -> None:
    """Publish through app.db.events, which takes a dict or JSON text."""
    if payload is not None and not isinstance(payload, dict):
        payload = json.dumps(payload)
    await publish_event(
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


WRITERS: dict[str, Write] = {
    "sql": write_with_sql,
    "publish_event": write_with_python,
}


async def refuse_with_sql(
    conn: asyncpg.Connection, run_id: uuid.UUID, event_type: str, **fields: Any
) -> Refusal:
    """Write an event that must be refused, and return the database's answer."""
    with pytest.raises(asyncpg.PostgresError) as refused:
        await write_with_sql(conn, run_id, event_type, **fields)
    error = refused.value
    told = f"{error.message} ({error.hint})" if error.hint else error.message
    return Refusal(error.sqlstate, told)


async def refuse_with_python(
    conn: asyncpg.Connection, run_id: uuid.UUID, event_type: str, **fields: Any
) -> Refusal:
    """The same through publish_event, which must pass the database's words on."""
    with pytest.raises(EventRejected) as refused:
        await write_with_python(conn, run_id, event_type, **fields)
    cause = refused.value.__cause__
    assert isinstance(cause, asyncpg.PostgresError)
    return Refusal(cause.sqlstate, refused.value.detail)


REFUSERS: dict[str, Refuse] = {
    "sql": refuse_with_sql,
    "publish_event": refuse_with_python,
}


async def read_events(conn: asyncpg.Connection, run_id: uuid.UUID) -> list[Any]:
    """Every stored event of the run, in sequence order."""
    rows: list[Any] = await conn.fetch(
        f"SELECT {EVENT_COLUMNS} FROM run_events WHERE run_id = $1 ORDER BY seq",
        run_id,
    )
    return rows


async def read_event(conn: asyncpg.Connection, event_id: uuid.UUID) -> Any:
    return await conn.fetchrow(
        f"SELECT {EVENT_COLUMNS} FROM run_events WHERE id = $1", event_id
    )


# The run's row and the sequence of its latest event, which the run's row no
# longer keeps (migration 0003).
READ_RUN = """
SELECT id, org_id, status, created_at, updated_at, ended_at,
       (SELECT coalesce(max(seq), 0) FROM run_events WHERE run_id = runs.id)
           AS last_seq
FROM runs WHERE id = $1
"""


async def read_run(conn: asyncpg.Connection, run_id: uuid.UUID) -> Any:
    return await conn.fetchrow(READ_RUN, run_id)
