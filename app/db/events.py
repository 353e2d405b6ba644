"""Queries on run_events: reading a run's log in sequence order, and publishing."""

import json
import uuid
from typing import Any

import asyncpg

from app.errors import EventRejected

TERMINAL_TYPES = frozenset({"run_completed", "run_failed", "run_cancelled"})

EVENT_COLUMNS = (
    "id, run_id, org_id, seq, type, status, phase, candidate_id, proposal_id,"
    " payload, created_at"
)

# (run_id, seq) is unique, so this walks the index in order and stops at the
# page size.
READ_AFTER = f"""
SELECT {EVENT_COLUMNS} FROM run_events
WHERE run_id = $1 AND seq > $2
ORDER BY seq
LIMIT $3
"""

READ_BETWEEN = f"""
SELECT {EVENT_COLUMNS} FROM run_events
WHERE run_id = $1 AND seq > $2 AND seq <= $3
ORDER BY seq
"""

# What the database answers to an event it will not store: a broken rule of
# the contract (class 23 and 55000) or a value it cannot hold (class 22, such
# as \u0000 in jsonb).
REFUSALS = (
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ObjectNotInPrerequisiteStateError,
    asyncpg.DataError,
)

INSERT = """
INSERT INTO run_events
    (run_id, type, status, phase, candidate_id, proposal_id, payload, id)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)
RETURNING id, seq
"""


async def read_events_after(
    conn: Any, run_id: uuid.UUID, after_seq: int, limit: int
) -> list[Any]:
    """Up to `limit` events of the run with a sequence above `after_seq`, in order."""
    rows: list[Any] = await conn.fetch(READ_AFTER, run_id, after_seq, limit)
    return rows


async def find_event_in_run(
    conn: Any, run_id: uuid.UUID, event_id: uuid.UUID
) -> tuple[int, str] | None:
    """The sequence and type of an event, if it is one of this run's."""
    row = await conn.fetchrow(
        "SELECT seq, type FROM run_events WHERE id = $1 AND run_id = $2",
        event_id,
        run_id,
    )
    if row is None:
        return None
    return row["seq"], row["type"]


async def publish_event(
    conn: Any,
    run_id: uuid.UUID,
    event_type: str,
    *,
    status: str | None = None,
    phase: str | None = None,
    candidate_id: str | None = None,
    proposal_id: str | None = None,
    payload: dict[str, Any] | str | None = None,
    event_id: uuid.UUID | None = None,
) -> tuple[uuid.UUID, int]:
    """Publish one event through the same INSERT any writer uses.

    `payload` is a dict, or JSON text that the database parses itself (so a
    CLI user's numbers keep every digit).

    Raises:
        EventRejected: the database refused the event; the message is its own
            words, which name the broken rule. Nothing was stored.
    """
    encoded_payload = payload
    if isinstance(payload, dict):
        # The standard library, not orjson: integers beyond 64 bits are legal
        # JSON and jsonb keeps them.
        encoded_payload = json.dumps(payload, ensure_ascii=False, allow_nan=False)
    try:
        row = await conn.fetchrow(
            INSERT,
            run_id,
            event_type,
            status,
            phase,
            candidate_id,
            proposal_id,
            encoded_payload,
            event_id,
        )
    except REFUSALS as exc:
        raise EventRejected(describe_refusal(exc)) from exc
    return row["id"], row["seq"]


def describe_refusal(exc: asyncpg.PostgresError) -> str:
    message = getattr(exc, "message", None) or str(exc)
    hint = getattr(exc, "hint", None)
    return f"{message} ({hint})" if hint else message
