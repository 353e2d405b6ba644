"""SPEC section 3: what the database fills in for a writer that it accepts."""

import datetime
import json
import uuid
from typing import Any

import asyncpg
import pytest

from tests.db.writer import Write, read_event, read_events, read_run, write_with_sql
from tests.fixtures.factories import (
    VALID_FIELDS,
    MakeRun,
    MakeTenant,
    Publish,
    Tenant,
)

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)

TERMINAL_STATUSES = [
    ("run_completed", "succeeded"),
    ("run_completed", "no_winner"),
    ("run_failed", "failed"),
    ("run_cancelled", "cancelled"),
]


def uuid_milliseconds(value: uuid.UUID) -> int:
    """The Unix time in milliseconds in a UUIDv7's first 48 bits (RFC 9562)."""
    return int.from_bytes(value.bytes[:6], "big")


def milliseconds(moment: datetime.datetime) -> int:
    """Whole milliseconds since the epoch, in integers: floats blur the last one."""
    return (moment - EPOCH) // datetime.timedelta(milliseconds=1)


async def read_clock(db: asyncpg.Connection) -> datetime.datetime:
    moment: datetime.datetime = await db.fetchval("SELECT clock_timestamp()")
    return moment


async def read_run_version(db: asyncpg.Connection, run_id: uuid.UUID) -> Any:
    """The run's row with the id of the transaction that wrote this version."""
    return await db.fetchrow(
        "SELECT xmin::text AS xmin, status, updated_at, ended_at FROM runs"
        " WHERE id = $1",
        run_id,
    )


@pytest.mark.parametrize("event_type", sorted(VALID_FIELDS))
async def test_publish_accepts_each_type_with_its_required_field(
    db: asyncpg.Connection, write: Write, run_id: uuid.UUID, event_type: str
) -> None:
    fields = VALID_FIELDS[event_type]

    await write(db, run_id, event_type, **fields)

    [event] = await read_events(db, run_id)
    assert event["type"] == event_type
    stored = {
        name: event[name]
        for name in ("status", "phase", "candidate_id", "proposal_id", "payload")
        if event[name] is not None
    }
    assert stored == fields


@pytest.mark.parametrize(("event_type", "status"), TERMINAL_STATUSES)
async def test_publish_accepts_each_terminal_status(
    db: asyncpg.Connection,
    write: Write,
    run_id: uuid.UUID,
    event_type: str,
    status: str,
) -> None:
    await write(db, run_id, "run_started", status="running")

    await write(db, run_id, event_type, status=status)

    run = await read_run(db, run_id)
    assert run["status"] == status
    assert run["ended_at"] is not None
    assert run["last_seq"] == 2


async def test_publish_gives_id_a_uuidv7(
    db: asyncpg.Connection, write: Write, run_id: uuid.UUID
) -> None:
    before = await read_clock(db)

    await write(db, run_id, "phase_changed", phase="generating")

    after = await read_clock(db)
    [event] = await read_events(db, run_id)
    assert event["id"].version == 7
    assert event["id"].variant == uuid.RFC_4122
    assert milliseconds(before) <= uuid_milliseconds(event["id"]) <= milliseconds(after)


async def test_publish_ids_are_time_ordered_and_not_after_created_at(
    db: asyncpg.Connection, run_id: uuid.UUID
) -> None:
    """The id's time is truncated to the millisecond, as RFC 9562 says.

    Rounding epoch * 1000 to the nearest millisecond put about half of the
    ids up to half a millisecond in the future: after their own created_at.
    """
    for number in range(50):
        await write_with_sql(db, run_id, "phase_changed", phase=f"phase-{number}")

    events = await read_events(db, run_id)
    stamps = [uuid_milliseconds(event["id"]) for event in events]
    assert stamps == sorted(stamps)
    late = [
        (uuid_milliseconds(event["id"]), milliseconds(event["created_at"]))
        for event in events
        if uuid_milliseconds(event["id"]) > milliseconds(event["created_at"])
    ]
    assert late == []
    assert len({event["id"] for event in events}) == 50


async def test_publish_keeps_id_given_by_writer(
    db: asyncpg.Connection, write: Write, run_id: uuid.UUID
) -> None:
    event_id = uuid.uuid4()

    await write(
        db, run_id, "candidate_persisted", candidate_id="cand_7", event_id=event_id
    )

    event = await read_event(db, event_id)
    assert event["run_id"] == run_id
    assert event["candidate_id"] == "cand_7"


async def test_publish_takes_org_from_run(
    db: asyncpg.Connection, write: Write, tenant: Tenant, run_id: uuid.UUID
) -> None:
    await write(db, run_id, "run_enqueued", status="queued")

    [event] = await read_events(db, run_id)
    assert event["org_id"] == tenant.org_id


async def test_publish_sets_created_at_from_database_clock(
    db: asyncpg.Connection, write: Write, run_id: uuid.UUID
) -> None:
    before = await read_clock(db)

    await write(db, run_id, "proposal_created", proposal_id="prop_9")

    after = await read_clock(db)
    [event] = await read_events(db, run_id)
    assert before <= event["created_at"] <= after
    assert event["created_at"].utcoffset() is not None


async def test_publish_overrides_org_seq_and_created_at_given_by_writer(
    db: asyncpg.Connection,
    make_tenant: MakeTenant,
    tenant: Tenant,
    run_id: uuid.UUID,
) -> None:
    """A writer cannot claim another organisation, a sequence or a time."""
    other = await make_tenant("other")

    await db.execute(
        """
        INSERT INTO run_events (run_id, type, phase, org_id, seq, created_at)
        VALUES ($1, 'phase_changed', 'generating', $2, 42, '2000-01-01T00:00:00Z')
        """,
        run_id,
        other.org_id,
    )

    [event] = await read_events(db, run_id)
    assert event["org_id"] == tenant.org_id
    assert event["seq"] == 1
    assert event["created_at"].year > 2000


async def test_publish_numbers_each_run_from_one(
    db: asyncpg.Connection, write: Write, make_run: MakeRun, tenant: Tenant
) -> None:
    first = await make_run(tenant)
    second = await make_run(tenant)

    await write(db, first, "run_enqueued", status="queued")
    await write(db, second, "run_enqueued", status="queued")
    await write(db, first, "run_started", status="running")
    await write(db, first, "phase_changed", phase="generating")
    await write(db, second, "run_started", status="running")

    assert [event["seq"] for event in await read_events(db, first)] == [1, 2, 3]
    assert [event["seq"] for event in await read_events(db, second)] == [1, 2]
    assert (await read_run(db, first))["last_seq"] == 3
    assert (await read_run(db, second))["last_seq"] == 2


async def test_publish_tracks_run_status_through_lifecycle(
    db: asyncpg.Connection, write: Write, run_id: uuid.UUID
) -> None:
    lifecycle = [
        ("run_enqueued", VALID_FIELDS["run_enqueued"], "queued"),
        ("run_started", VALID_FIELDS["run_started"], "running"),
        ("phase_changed", VALID_FIELDS["phase_changed"], "running"),
        ("candidate_persisted", VALID_FIELDS["candidate_persisted"], "running"),
        ("proposal_created", VALID_FIELDS["proposal_created"], "running"),
        ("run_completed", {"status": "no_winner"}, "no_winner"),
    ]
    seen = []

    for event_type, fields, _ in lifecycle:
        await write(db, run_id, event_type, **fields)
        run = await read_run(db, run_id)
        seen.append((run["status"], run["last_seq"], run["ended_at"] is not None))

    expected = [
        (status, seq, event_type == "run_completed")
        for seq, (event_type, _, status) in enumerate(lifecycle, start=1)
    ]
    assert seen == expected


async def test_publish_sets_ended_at_to_terminal_event_time(
    db: asyncpg.Connection, publish: Publish, run_id: uuid.UUID
) -> None:
    await publish(run_id, "run_started")

    terminal = await publish(run_id, "run_cancelled")

    run = await read_run(db, run_id)
    event = await read_event(db, terminal.id)
    assert run["ended_at"] == event["created_at"]
    assert run["updated_at"] == event["created_at"]
    assert run["status"] == "cancelled"


async def test_publish_stores_payload_exactly(
    db: asyncpg.Connection, write: Write, run_id: uuid.UUID
) -> None:
    payload = {
        "text": "line one\nid: evt_forged\r\nevent: run_completed",
        "unicode": "naïve 🚀 \u2028",
        "nested": {"list": [1, 2.5, None, True], "empty": {}},
    }

    await write(db, run_id, "phase_changed", phase="scoring", payload=payload)

    [event] = await read_events(db, run_id)
    assert json.loads(event["payload"]) == payload


async def test_publish_stores_no_payload_as_null(
    db: asyncpg.Connection, write: Write, run_id: uuid.UUID
) -> None:
    await write(db, run_id, "phase_changed", phase="scoring")

    [event] = await read_events(db, run_id)
    assert event["payload"] is None


async def test_publish_writes_run_row_only_for_status_events(
    db: asyncpg.Connection, publish: Publish, run_id: uuid.UUID
) -> None:
    """updated_at is the time of the last status change; other events leave
    the run's row as it was, not even a new row version."""
    created = await read_run_version(db, run_id)
    for event_type in ("phase_changed", "candidate_persisted", "proposal_created"):
        await publish(run_id, event_type)
    untouched = await read_run_version(db, run_id)
    started = await publish(run_id, "run_started")
    await publish(run_id, "phase_changed")
    running = await read_run_version(db, run_id)
    ended = await publish(run_id, "run_failed")

    run = await read_run(db, run_id)
    assert untouched == created
    assert running["xmin"] != created["xmin"]
    assert (running["status"], running["ended_at"]) == ("running", None)
    assert running["updated_at"] == (await read_event(db, started.id))["created_at"]
    ended_at = (await read_event(db, ended.id))["created_at"]
    assert (run["status"], run["updated_at"], run["ended_at"]) == (
        "failed",
        ended_at,
        ended_at,
    )
