"""Properties of the wire encoder over arbitrary event rows and JSON payloads.

Rows are shaped as app.db.events reads them; payloads are JSON text as
PostgreSQL prints jsonb (spaces after ':' and ','), and a sample of them is
checked against the real PostgreSQL output.
"""

import datetime
import json
import uuid
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.db.events import TERMINAL_TYPES
from app.ids import EVENT_PREFIX, ORG_PREFIX, RUN_PREFIX, format_id
from app.streaming.sse import compact_jsonb, encode_event
from tests.fixtures.factories import VALID_FIELDS
from tests.fixtures.sse import check_event_frame, parse_frame

# Characters a line-iterating client may split on, beyond CR and LF.
LINE_BREAKERS = ("\u2028", "\u2029", "\u0085")

# PostgreSQL text cannot hold NUL (jsonb refuses \u0000) nor lone surrogates.
STORABLE_TEXT = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
)

# Text that favours what breaks wire formats: line ends, quotes, escapes,
# field-like prefixes and multi-byte characters.
TRICKY_TEXT = st.one_of(
    STORABLE_TEXT,
    st.lists(
        st.sampled_from(
            ["\n", "\r", "\r\n", "\u2028", "\u2029", "\u0085", '"', "\\", ": ", ", "]
            + ["id: evt_x", "event: run_failed", "data: {}", "\U0001f600", "é"]
        )
        | STORABLE_TEXT,
        max_size=8,
    ).map("".join),
)

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TRICKY_TEXT
)

JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(TRICKY_TEXT, children, max_size=4)
    ),
    max_leaves=20,
)

PAYLOADS = st.dictionaries(TRICKY_TEXT, JSON_VALUES, max_size=5)

OPTIONAL_TEXT = st.none() | TRICKY_TEXT


def jsonb_text(value: Any) -> str:
    """JSON text spaced as PostgreSQL prints jsonb."""
    return json.dumps(value, ensure_ascii=False)


@st.composite
def event_rows(draw: st.DrawFn) -> dict[str, Any]:
    payload = draw(st.none() | PAYLOADS)
    return {
        "id": draw(st.uuids()),
        "run_id": draw(st.uuids()),
        "org_id": draw(st.uuids()),
        "seq": draw(st.integers(min_value=1, max_value=2**63 - 1)),
        "type": draw(st.sampled_from(sorted(VALID_FIELDS))),
        "status": draw(OPTIONAL_TEXT),
        "phase": draw(OPTIONAL_TEXT),
        "candidate_id": draw(OPTIONAL_TEXT),
        "proposal_id": draw(OPTIONAL_TEXT),
        "payload": None if payload is None else jsonb_text(payload),
        "created_at": draw(st.datetimes(timezones=st.just(datetime.UTC))),
    }


@given(row=event_rows())
def test_encode_event_frame_has_exactly_id_event_and_data_lines(
    row: dict[str, Any],
) -> None:
    encoded = encode_event(row)

    lines = encoded.frame.split(b"\n")
    event_id = format_id(EVENT_PREFIX, row["id"])
    assert encoded.frame.endswith(b"\n\n")
    assert lines[3:] == [b"", b""]
    assert lines[0] == f"id: {event_id}".encode()
    assert lines[1] == f"event: {row['type']}".encode()
    assert lines[2].startswith(b"data: {")
    assert b"\r" not in encoded.frame
    assert encoded.seq == row["seq"]
    assert encoded.is_terminal == (row["type"] in TERMINAL_TYPES)


@given(row=event_rows())
def test_encode_event_data_is_one_line_for_every_line_splitter(
    row: dict[str, Any],
) -> None:
    data_line = encode_event(row).frame.split(b"\n")[2].decode("utf-8")

    assert not any(breaker in data_line for breaker in LINE_BREAKERS)
    # str.splitlines splits on every Unicode line boundary, VT and FF included.
    assert data_line.splitlines() == [data_line]


@given(row=event_rows())
def test_encode_event_json_carries_the_row_unchanged(row: dict[str, Any]) -> None:
    encoded = encode_event(row)

    body = check_event_frame(parse_frame(encoded.frame.removesuffix(b"\n\n")))
    assert body["id"] == format_id(EVENT_PREFIX, row["id"])
    assert body["run_id"] == format_id(RUN_PREFIX, row["run_id"])
    assert body["org_id"] == format_id(ORG_PREFIX, row["org_id"])
    assert body["type"] == row["type"]
    for name in ("status", "phase", "candidate_id", "proposal_id"):
        assert body.get(name) == row[name]
        assert (name in body) == (row[name] is not None)
    if row["payload"] is None:
        assert "payload" not in body
    else:
        assert body["payload"] == json.loads(row["payload"])
    created_at = datetime.datetime.fromisoformat(body["created_at"])
    assert created_at == row["created_at"]


def remove_whitespace_outside_strings(text: str) -> str:
    """An oracle for compact_jsonb written as a character scanner, not a regex."""
    kept: list[str] = []
    in_string = escaped = False
    for char in text:
        if in_string:
            kept.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
            kept.append(char)
        elif char not in " \t\n\r":
            kept.append(char)
    return "".join(kept)


@settings(
    max_examples=150,
    deadline=None,
    # One connection serves every example; they only read.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=JSON_VALUES)
async def test_compact_jsonb_compacts_postgres_output_exactly(
    db: asyncpg.Connection, value: Any
) -> None:
    stored: str = await db.fetchval("SELECT $1::jsonb::text", jsonb_text(value))

    compacted = compact_jsonb(stored)

    assert compacted == remove_whitespace_outside_strings(stored)
    assert json.loads(compacted) == json.loads(stored)


@settings(max_examples=50, deadline=None)
@given(key=TRICKY_TEXT, text=TRICKY_TEXT)
def test_compact_jsonb_leaves_string_contents_alone(key: str, text: str) -> None:
    spaced = jsonb_text({key: [text, ": ", ", "]})

    assert json.loads(compact_jsonb(spaced)) == {key: [text, ": ", ", "]}


def test_compact_jsonb_keeps_postgres_number_digits() -> None:
    """Departure 1 of app.streaming.sse: numbers travel as PostgreSQL wrote them."""
    stored = '{"big": 123456789012345678901234567890, "exact": 0.10000000000000000001}'

    assert compact_jsonb(stored) == (
        '{"big":123456789012345678901234567890,"exact":0.10000000000000000001}'
    )


@pytest.mark.parametrize("value", [uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)])
def test_encode_event_renders_the_lowest_and_highest_uuids(value: uuid.UUID) -> None:
    row = {
        "id": value,
        "run_id": value,
        "org_id": value,
        "seq": 1,
        "type": "run_started",
        "status": "running",
        "phase": None,
        "candidate_id": None,
        "proposal_id": None,
        "payload": None,
        "created_at": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    }

    body = check_event_frame(parse_frame(encode_event(row).frame[:-2]))

    assert body["id"] == format_id(EVENT_PREFIX, value)
    assert body["run_id"] == format_id(RUN_PREFIX, value)
