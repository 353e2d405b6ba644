"""Properties of the wire encoder over arbitrary event rows and JSON payloads.

Rows are shaped as app.db.events reads them; payloads are JSON text as
PostgreSQL prints jsonb (spaces after ':' and ','), and a sample of them is
checked against the real PostgreSQL output.
"""

import datetime
import json
import re
import uuid
from typing import Any

import asyncpg
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.db.events import TERMINAL_TYPES
from app.ids import EVENT_PREFIX, ORG_PREFIX, RUN_PREFIX, format_id
from app.streaming.sse import (
    compact_jsonb,
    compact_jsonb_by_regex,
    encode_event,
    escape_line_breakers,
)
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


# The string pattern the encoder was first written with: one alternation per
# character. compact_jsonb must split text exactly where this does.
ORIGINAL_JSON_STRING = re.compile(r'("(?:[^"\\]|\\.)*")')

# Pieces of text that decide where a JSON string starts and ends, what the
# fast path masks, and what makes it step aside: quotes, backslashes, the
# separators, a newline, the control characters it uses as stand-ins, and
# characters beyond Latin-1.
TEXT_PIECES = st.sampled_from(
    ['"', '"', "\\", "\\", '\\"', "\\\\", ": ", ", ", ":", ",", " ", "a", "{", "}"]
    + ["[", "]", "1", "\n", "\x00", "\x01", "\x02", "\u2028", "é", "\U0001f600"]
)
SCANNED_TEXT = st.lists(TEXT_PIECES, max_size=30).map("".join)


def compact_by_original_regex(text: str) -> str:
    parts = ORIGINAL_JSON_STRING.split(text)
    return "".join(
        part if index % 2 else part.replace(": ", ":").replace(", ", ",")
        for index, part in enumerate(parts)
    )


def encode_plainly(row: dict[str, Any]) -> bytes:
    """The frame as the encoder first built it, without its shortcuts: a dict
    through orjson, the payload compacted by the original regex, every line
    breaker replaced."""
    event_id = format_id(EVENT_PREFIX, row["id"])
    body: dict[str, Any] = {
        "id": event_id,
        "run_id": format_id(RUN_PREFIX, row["run_id"]),
        "org_id": format_id(ORG_PREFIX, row["org_id"]),
        "type": row["type"],
    }
    for name in ("status", "phase", "candidate_id", "proposal_id"):
        if row[name] is not None:
            body[name] = row[name]
    if row["payload"] is not None:
        body["payload"] = orjson.Fragment(compact_by_original_regex(row["payload"]))
    body["created_at"] = row["created_at"]
    data = orjson.dumps(body, option=orjson.OPT_UTC_Z)
    for breaker in LINE_BREAKERS:
        data = data.replace(breaker.encode(), f"\\u{ord(breaker):04x}".encode())
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (
        event_id.encode(),
        row["type"].encode(),
        data,
    )


@settings(max_examples=300)
@given(row=event_rows())
def test_encode_event_frame_equals_the_plain_encoding(row: dict[str, Any]) -> None:
    assert encode_event(row).frame == encode_plainly(row)


@given(
    rows=st.lists(event_rows(), min_size=2, max_size=8),
    runs=st.lists(st.uuids(), min_size=2, max_size=2),
    orgs=st.lists(st.uuids(), min_size=2, max_size=2),
    picks=st.lists(st.tuples(st.booleans(), st.booleans()), min_size=8, max_size=8),
)
def test_encode_event_names_each_rows_own_run_and_org(
    rows: list[dict[str, Any]],
    runs: list[uuid.UUID],
    orgs: list[uuid.UUID],
    picks: list[tuple[bool, bool]],
) -> None:
    """The encoder remembers the last row's run and org; rows that switch
    either one, in any order, must still carry their own."""
    for row, (run_pick, org_pick) in zip(rows, picks, strict=False):
        row["run_id"], row["org_id"] = runs[run_pick], orgs[org_pick]

    bodies = [
        check_event_frame(parse_frame(encode_event(row).frame[:-2])) for row in rows
    ]

    for row, body in zip(rows, bodies, strict=True):
        assert body["run_id"] == format_id(RUN_PREFIX, row["run_id"])
        assert body["org_id"] == format_id(ORG_PREFIX, row["org_id"])


def test_encode_event_gives_a_run_seen_under_another_org_that_org() -> None:
    run_id, first_org, second_org = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "run_id": run_id,
        "org_id": first_org,
        "seq": 1,
        "type": "run_started",
        "status": "running",
        "phase": None,
        "candidate_id": None,
        "proposal_id": None,
        "payload": None,
        "created_at": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    }
    encode_event(row)

    frame = encode_event({**row, "org_id": second_org}).frame

    body = check_event_frame(parse_frame(frame[:-2]))
    assert body["org_id"] == format_id(ORG_PREFIX, second_org)


@settings(max_examples=1000)
@given(text=SCANNED_TEXT)
# A backslash before a newline ends the regex's string: `.` stops there.
@example(text='{"a\\\n: b": ", "}')
# An escaped quote outside a string still opens one for the regex.
@example(text='a\\"b"c: d"')
# The fast path's stand-ins, already in the text beside escapes.
@example(text='{"\x01\\\\": "\x02, \\"", "k": [1, 2]}')
@example(text='{"\x00": "a, b", "c": "\\\\"}')
def test_compact_jsonb_splits_any_text_where_the_original_regex_does(
    text: str,
) -> None:
    """Odd quotes, escapes outside strings, a backslash before a newline and
    the fast path's own stand-in characters included: every path agrees."""
    expected = compact_by_original_regex(text)

    assert compact_jsonb(text) == expected
    assert compact_jsonb_by_regex(text) == expected


@settings(max_examples=300)
@given(value=JSON_VALUES, ensure_ascii=st.booleans())
def test_compact_jsonb_matches_the_original_regex_on_json(
    value: Any, ensure_ascii: bool
) -> None:
    text = json.dumps(value, ensure_ascii=ensure_ascii)

    assert compact_jsonb(text) == compact_by_original_regex(text)


TRICKY_JSON_VALUES = [
    {"a": ": ", "b": ", ", ": ": ", ", "}, ": ["]", "[, "]},
    {"message": "Step 3: opened the branch, ran the tests: 2 failures"},
    {"starts": ": x", "ends": "x, ", "only": ":", "both": ", : ,"},
    {"quote": 'he said "a: b, c"', 'key "quoted": , ': '"'},
    {"escaped quote then separator": '\\": ', "backslash last": "a\\"},
    {"backslashes": "\\\\", "before quote": '\\\\"', "run": "\\\\\\, "},
    {"lines": "one\ntwo\r\nthree\t: four", "control": "\x01, \x02: \x1f"},
    {"unicode": "漢字: かな, 😀", "accents": "é, ü: ñ", "rtl": "שלום, עולם"},
    {"separators": "\u2028: \u2029, \u0085", "\u2028": ["\u2029, "]},
    {"nested": [{"a": [": ", {", ": ""}]}, [], {}, ""], "empty": ""},
    {"big": 123456789012345678901234567890, "decimal": 1.10, "exp": 1e-7},
    ["a, b", "c: d", 1, -2.5, True, None, [": "], {"e": ", "}],
    ": not an object, just a string",
]


@pytest.mark.parametrize("value", TRICKY_JSON_VALUES)
async def test_compact_jsonb_keeps_tricky_strings_as_postgres_stored_them(
    db: asyncpg.Connection, value: Any
) -> None:
    stored: str = await db.fetchval("SELECT $1::jsonb::text", json.dumps(value))

    compacted = compact_jsonb(stored)

    assert compacted == remove_whitespace_outside_strings(stored)
    assert compacted == compact_by_original_regex(stored)
    assert json.loads(compacted) == json.loads(stored)


@pytest.mark.parametrize(
    "text",
    [
        "plain ascii, nothing to do",
        "curly \u2019quotes\u2019 \u2014 and \u2026 share the lead byte",
        "Latin \u00e9 and a no-break space\u00a0: lead byte C2, as U+0085's",
        "漢字 and 😀",
        "\u2028",
        "a\u2029b\u0085c\u2028d\u2019e",
    ],
)
def test_escape_line_breakers_escapes_exactly_the_three_breakers(text: str) -> None:
    escaped = escape_line_breakers(text.encode())

    expected = text
    for breaker in LINE_BREAKERS:
        expected = expected.replace(breaker, f"\\u{ord(breaker):04x}")
    assert escaped == expected.encode()
