"""SPEC section 3: every event the database refuses, in words, storing nothing."""

import uuid
from typing import Any

import asyncpg
import pytest

from tests.db.writer import Refuse, read_event, read_events, write_with_sql
from tests.fixtures.factories import VALID_FIELDS, MakeRun, Publish, Tenant

CHECK_VIOLATION = "23514"
FOREIGN_KEY_VIOLATION = "23503"
UNIQUE_VIOLATION = "23505"
ENDED = "55000"
UNTRANSLATABLE_CHARACTER = "22P05"
CHARACTER_NOT_IN_REPERTOIRE = "22021"

STATUS_TYPES = ["run_enqueued", "run_started", "run_completed", "run_failed"]
STATUS_TYPES += ["run_cancelled"]
FIELD_TYPES = {
    "phase_changed": "phase",
    "candidate_persisted": "candidate_id",
    "proposal_created": "proposal_id",
}
TERMINAL_TYPES = ["run_completed", "run_failed", "run_cancelled"]

MISFITTING_STATUSES = [
    ("run_enqueued", "running"),
    ("run_started", "queued"),
    ("run_completed", "failed"),
    ("run_completed", "cancelled"),
    ("run_failed", "succeeded"),
    ("run_cancelled", "failed"),
    ("run_completed", "SUCCEEDED"),
    ("run_started", " running"),
    ("phase_changed", "running"),
    ("candidate_persisted", "queued"),
    ("proposal_created", "succeeded"),
]


async def read_state(db: asyncpg.Connection, run_id: uuid.UUID) -> dict[str, Any]:
    """Everything a refused event must leave as it was."""
    row = await db.fetchrow(
        """
        SELECT (SELECT count(*) FROM run_events WHERE run_id = $1) AS events,
               (SELECT coalesce(max(seq), 0) FROM run_events WHERE run_id = $1)
                   AS last_seq,
               status, updated_at, ended_at
        FROM runs WHERE id = $1
        """,
        run_id,
    )
    return dict(row)


async def test_publish_refuses_unknown_type(
    db: asyncpg.Connection, publish: Publish, refuse: Refuse, run_id: uuid.UUID
) -> None:
    await publish(run_id, "run_enqueued")
    before = await read_state(db, run_id)

    refusal = await refuse(db, run_id, "run_paused", status="queued")

    assert refusal.sqlstate == CHECK_VIOLATION
    assert "unknown event type 'run_paused'" in refusal.message
    assert "run_enqueued" in refusal.message
    assert await read_state(db, run_id) == before


@pytest.mark.parametrize("event_type", ["", "RUN_STARTED", "run_started "])
async def test_publish_refuses_type_that_is_nearly_right(
    db: asyncpg.Connection, refuse: Refuse, run_id: uuid.UUID, event_type: str
) -> None:
    before = await read_state(db, run_id)

    refusal = await refuse(db, run_id, event_type, status="running")

    assert refusal.sqlstate == CHECK_VIOLATION
    assert f"unknown event type '{event_type}'" in refusal.message
    assert await read_state(db, run_id) == before


@pytest.mark.parametrize("event_type", STATUS_TYPES)
async def test_publish_refuses_status_type_without_status(
    db: asyncpg.Connection,
    publish: Publish,
    refuse: Refuse,
    run_id: uuid.UUID,
    event_type: str,
) -> None:
    await publish(run_id, "phase_changed")
    before = await read_state(db, run_id)

    refusal = await refuse(db, run_id, event_type)

    assert refusal.sqlstate == CHECK_VIOLATION
    assert f"event type {event_type} requires a status" in refusal.message
    assert VALID_FIELDS[event_type]["status"] in refusal.message
    assert await read_state(db, run_id) == before


@pytest.mark.parametrize("event_type", STATUS_TYPES)
async def test_publish_refuses_status_type_with_empty_status(
    db: asyncpg.Connection,
    publish: Publish,
    refuse: Refuse,
    run_id: uuid.UUID,
    event_type: str,
) -> None:
    await publish(run_id, "phase_changed")
    before = await read_state(db, run_id)

    refusal = await refuse(db, run_id, event_type, status="")

    assert refusal.sqlstate == CHECK_VIOLATION
    assert f"status '' does not fit event type {event_type}" in refusal.message
    assert await read_state(db, run_id) == before


@pytest.mark.parametrize(("event_type", "field"), sorted(FIELD_TYPES.items()))
async def test_publish_refuses_type_without_its_field(
    db: asyncpg.Connection,
    publish: Publish,
    refuse: Refuse,
    run_id: uuid.UUID,
    event_type: str,
    field: str,
) -> None:
    await publish(run_id, "run_started")
    before = await read_state(db, run_id)

    refusal = await refuse(db, run_id, event_type)

    assert refusal.sqlstate == CHECK_VIOLATION
    assert f"event type {event_type} requires a non-empty {field}" in refusal.message
    assert await read_state(db, run_id) == before


@pytest.mark.parametrize(("event_type", "field"), sorted(FIELD_TYPES.items()))
async def test_publish_refuses_type_with_empty_field(
    db: asyncpg.Connection,
    publish: Publish,
    refuse: Refuse,
    run_id: uuid.UUID,
    event_type: str,
    field: str,
) -> None:
    await publish(run_id, "run_started")
    before = await read_state(db, run_id)

    refusal = await refuse(db, run_id, event_type, **{field: ""})

    assert refusal.sqlstate == CHECK_VIOLATION
    assert f"event type {event_type} requires a non-empty {field}" in refusal.message
    assert await read_state(db, run_id) == before


@pytest.mark.parametrize(("event_type", "field"), sorted(FIELD_TYPES.items()))
async def test_publish_refuses_field_given_to_another_type(
    db: asyncpg.Connection,
    refuse: Refuse,
    run_id: uuid.UUID,
    event_type: str,
    field: str,
) -> None:
    """A field of one type does not stand in for another type's field."""
    others = {name: "x" for name in FIELD_TYPES.values() if name != field}
    before = await read_state(db, run_id)

    refusal = await refuse(db, run_id, event_type, **others)

    assert refusal.sqlstate == CHECK_VIOLATION
    assert f"requires a non-empty {field}" in refusal.message
    assert await read_state(db, run_id) == before


@pytest.mark.parametrize(("event_type", "status"), MISFITTING_STATUSES)
async def test_publish_refuses_status_that_does_not_fit_type(
    db: asyncpg.Connection,
    publish: Publish,
    refuse: Refuse,
    run_id: uuid.UUID,
    event_type: str,
    status: str,
) -> None:
    await publish(run_id, "run_enqueued")
    before = await read_state(db, run_id)
    fields = {**VALID_FIELDS[event_type], "status": status}

    refusal = await refuse(db, run_id, event_type, **fields)

    assert refusal.sqlstate == CHECK_VIOLATION
    assert f"status '{status}' does not fit event type {event_type}" in refusal.message
    assert await read_state(db, run_id) == before


@pytest.mark.parametrize(
    ("payload", "kind"),
    [([1, 2], "array"), ("text", "string"), (3, "number"), (True, "boolean")],
)
async def test_publish_refuses_payload_that_is_not_object(
    db: asyncpg.Connection,
    publish: Publish,
    refuse: Refuse,
    run_id: uuid.UUID,
    payload: Any,
    kind: str,
) -> None:
    await publish(run_id, "run_enqueued")
    before = await read_state(db, run_id)

    refusal = await refuse(db, run_id, "phase_changed", phase="x", payload=payload)

    assert refusal.sqlstate == CHECK_VIOLATION
    assert f"payload must be a JSON object, not {kind}" in refusal.message
    assert await read_state(db, run_id) == before


async def test_publish_refuses_json_null_payload(
    db: asyncpg.Connection, run_id: uuid.UUID
) -> None:
    """JSON null is a value, not an absent payload: SQL NULL is the way to omit it."""
    before = await read_state(db, run_id)

    with pytest.raises(asyncpg.CheckViolationError) as refused:
        await db.execute(
            "INSERT INTO run_events (run_id, type, phase, payload)"
            " VALUES ($1, 'phase_changed', 'x', 'null')",
            run_id,
        )

    assert "payload must be a JSON object, not null" in refused.value.message
    assert await read_state(db, run_id) == before


async def test_publish_refuses_unknown_run(
    db: asyncpg.Connection, refuse: Refuse
) -> None:
    unknown = uuid.uuid4()

    refusal = await refuse(db, unknown, "run_enqueued", status="queued")

    assert refusal.sqlstate == FOREIGN_KEY_VIOLATION
    assert f"unknown run {unknown}" in refusal.message
    assert (
        await db.fetchval("SELECT count(*) FROM run_events WHERE run_id = $1", unknown)
        == 0
    )
    assert await db.fetchval("SELECT count(*) FROM runs WHERE id = $1", unknown) == 0


async def test_publish_refuses_missing_run_by_name(db: asyncpg.Connection) -> None:
    """A writer that forgot run_id was told only `unknown run ` (NULL formatted
    as nothing), which names no problem it can fix."""
    before = await db.fetchval("SELECT count(*) FROM run_events")

    with pytest.raises(asyncpg.NotNullViolationError) as refused:
        await db.execute(
            "INSERT INTO run_events (type, status) VALUES ('run_started', 'running')"
        )

    assert "an event needs a run_id" in refused.value.message
    assert await db.fetchval("SELECT count(*) FROM run_events") == before


@pytest.mark.parametrize("terminal_type", TERMINAL_TYPES)
@pytest.mark.parametrize("next_type", sorted(VALID_FIELDS))
async def test_publish_refuses_any_event_after_terminal(
    db: asyncpg.Connection,
    publish: Publish,
    refuse: Refuse,
    run_id: uuid.UUID,
    terminal_type: str,
    next_type: str,
) -> None:
    await publish(run_id, "run_started")
    await publish(run_id, terminal_type)
    before = await read_state(db, run_id)

    refusal = await refuse(db, run_id, next_type, **VALID_FIELDS[next_type])

    assert refusal.sqlstate == ENDED
    status = VALID_FIELDS[terminal_type]["status"]
    assert f"run {run_id} has already ended with status {status}" in refusal.message
    assert await read_state(db, run_id) == before


@pytest.mark.parametrize(
    "payload",
    [{"text": "before\u0000after"}, {"key\u0000": 1}, {"list": ["\u0000"]}],
)
async def test_publish_refuses_nul_in_payload_cleanly(
    db: asyncpg.Connection,
    publish: Publish,
    refuse: Refuse,
    run_id: uuid.UUID,
    payload: dict[str, Any],
) -> None:
    """jsonb cannot hold \\u0000; the writer gets a data error, not a crash."""
    await publish(run_id, "run_enqueued")
    before = await read_state(db, run_id)

    refusal = await refuse(db, run_id, "phase_changed", phase="x", payload=payload)

    assert refusal.sqlstate == UNTRANSLATABLE_CHARACTER
    assert "Unicode escape" in refusal.message
    assert await read_state(db, run_id) == before


async def test_publish_refuses_nul_in_text_field_cleanly(
    db: asyncpg.Connection, refuse: Refuse, run_id: uuid.UUID
) -> None:
    before = await read_state(db, run_id)

    refusal = await refuse(db, run_id, "phase_changed", phase="gen\u0000erating")

    assert refusal.sqlstate == CHARACTER_NOT_IN_REPERTOIRE
    assert "0x00" in refusal.message
    assert await read_state(db, run_id) == before


async def test_publish_refuses_duplicate_id_on_same_run(
    db: asyncpg.Connection, publish: Publish, refuse: Refuse, run_id: uuid.UUID
) -> None:
    first = await publish(run_id, "phase_changed", phase="generating")
    before = await read_state(db, run_id)

    refusal = await refuse(
        db, run_id, "phase_changed", phase="generating", event_id=first.id
    )

    assert refusal.sqlstate == UNIQUE_VIOLATION
    assert f"event {first.id} already exists" in refusal.message
    assert await read_state(db, run_id) == before


async def test_publish_refuses_duplicate_id_on_another_run(
    db: asyncpg.Connection,
    publish: Publish,
    refuse: Refuse,
    make_run: MakeRun,
    tenant: Tenant,
    run_id: uuid.UUID,
) -> None:
    first = await publish(run_id, "phase_changed", phase="generating")
    other_run = await make_run(tenant)
    before = await read_state(db, other_run)

    refusal = await refuse(
        db, other_run, "phase_changed", phase="generating", event_id=first.id
    )

    assert refusal.sqlstate == UNIQUE_VIOLATION
    assert f"event {first.id} already exists" in refusal.message
    assert await read_state(db, other_run) == before
    assert (await read_event(db, first.id))["run_id"] == run_id


async def test_publish_refuses_duplicate_id_with_different_fields(
    db: asyncpg.Connection, publish: Publish, refuse: Refuse, run_id: uuid.UUID
) -> None:
    """The id alone decides: a retry that changed its fields is still a retry."""
    first = await publish(run_id, "phase_changed", phase="generating")
    before = await read_state(db, run_id)

    refusal = await refuse(
        db, run_id, "run_started", status="running", event_id=first.id
    )

    assert refusal.sqlstate == UNIQUE_VIOLATION
    assert await read_state(db, run_id) == before


@pytest.mark.parametrize("terminal_type", TERMINAL_TYPES)
async def test_publish_refuses_retried_terminal_event_as_duplicate(
    db: asyncpg.Connection,
    publish: Publish,
    refuse: Refuse,
    run_id: uuid.UUID,
    terminal_type: str,
) -> None:
    """A runtime retrying its terminal write must learn the write succeeded.

    The ended-run check ran before the duplicate-id check, so the retry of a
    committed run_completed was told the run had ended: a failure the writer
    would report, though its event was stored.
    """
    terminal = await publish(run_id, terminal_type, event_id=uuid.uuid4())
    before = await read_state(db, run_id)

    refusal = await refuse(
        db, run_id, terminal_type, **VALID_FIELDS[terminal_type], event_id=terminal.id
    )

    assert refusal.sqlstate == UNIQUE_VIOLATION
    assert f"event {terminal.id} already exists" in refusal.message
    assert await read_state(db, run_id) == before


async def test_publish_refuses_duplicate_id_in_one_transaction(
    db: asyncpg.Connection, run_id: uuid.UUID
) -> None:
    event_id = uuid.uuid4()

    transaction = db.transaction()
    await transaction.start()
    await write_with_sql(db, run_id, "phase_changed", phase="a", event_id=event_id)

    with pytest.raises(asyncpg.UniqueViolationError):
        await write_with_sql(db, run_id, "phase_changed", phase="b", event_id=event_id)
    await transaction.rollback()

    assert await read_events(db, run_id) == []
    assert (await read_state(db, run_id))["last_seq"] == 0


@pytest.mark.parametrize(
    "assignment",
    [
        "phase = 'rewritten'",
        "payload = '{\"rewritten\": true}'",
        "seq = seq + 100",
        "type = 'run_failed', status = 'failed', phase = NULL",
    ],
)
async def test_run_events_refuse_update(
    db: asyncpg.Connection, publish: Publish, run_id: uuid.UUID, assignment: str
) -> None:
    event = await publish(run_id, "phase_changed", phase="generating")
    stored = await read_event(db, event.id)

    with pytest.raises(asyncpg.ObjectNotInPrerequisiteStateError) as refused:
        await db.execute(f"UPDATE run_events SET {assignment} WHERE id = $1", event.id)

    assert "run_events is append-only" in refused.value.message
    assert await read_event(db, event.id) == stored


async def test_run_events_refuse_delete_while_the_run_is_live(
    db: asyncpg.Connection, publish: Publish, run_id: uuid.UUID
) -> None:
    """Numbers come from max(seq) + 1: a deleted tail would hand its number
    to the next event, which a client that saw the deleted one would skip."""
    await publish(run_id, "phase_changed", phase="one")
    second = await publish(run_id, "phase_changed", phase="two")

    with pytest.raises(asyncpg.ObjectNotInPrerequisiteStateError) as refused:
        await db.execute("DELETE FROM run_events WHERE id = $1", second.id)
    third = await publish(run_id, "phase_changed", phase="three")

    assert "has not ended" in refused.value.message
    assert [event["seq"] for event in await read_events(db, run_id)] == [1, 2, 3]
    assert third.seq == 3


async def test_run_events_allow_delete_once_the_run_has_ended(
    db: asyncpg.Connection, publish: Publish, run_id: uuid.UUID
) -> None:
    """What prune does: an ended run takes no more numbers."""
    await publish(run_id, "phase_changed", phase="one")
    await publish(run_id, "run_completed", status="succeeded")

    result = await db.execute("DELETE FROM run_events WHERE run_id = $1", run_id)

    assert result == "DELETE 2"
