"""Wire encoding: one event row becomes one SSE frame, encoded once and shared.

Departures from a plain `json.dumps` encoding, each deliberate:

1. The payload is sent as PostgreSQL stored it, only compacted: numbers keep
   their exact digits (a 30-digit integer stays one), which a round trip
   through Python floats would not.
2. U+2028, U+2029 and U+0085 are sent as JSON escapes. They are legal in
   JSON and in SSE, but line-iterating clients (Python's `str.splitlines`,
   some JavaScript tooling) break lines on them and would cut `data:` apart.

https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
"""

import datetime
import re
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from app.db.events import TERMINAL_TYPES
from app.ids import EVENT_PREFIX, ORG_PREFIX, RUN_PREFIX, format_id

OPTIONAL_FIELDS = ("status", "phase", "candidate_id", "proposal_id")

PING_FRAME = b": ping\n\n"

# A JSON string literal, escapes included; everything between two of them is
# structure, where PostgreSQL's jsonb output puts a space after ':' and ','.
JSON_STRING = re.compile(r'("(?:[^"\\]|\\.)*")')

# Departure 2: UTF-8 bytes of U+2028, U+2029 and U+0085 and their escapes.
# UTF-8 is self-synchronising, so these byte pairs never occur inside another
# character and a byte-level replace is safe.
LINE_BREAKING_CHARACTERS = (
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
    (b"\xc2\x85", b"\\u0085"),
)


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """An event ready for the wire; the same bytes go to every stream."""

    seq: int
    frame: bytes
    is_terminal: bool
    created_at: datetime.datetime


def encode_retry(retry_ms: int) -> bytes:
    return b"retry: %d\n\n" % retry_ms


def encode_event(row: Any) -> EncodedEvent:
    """Encode one `run_events` row (as read by app.db.events) as an SSE frame."""
    event_id = format_id(EVENT_PREFIX, row["id"])
    event_type: str = row["type"]

    body: dict[str, Any] = {
        "id": event_id,
        "run_id": format_run_id(row["run_id"]),
        "org_id": format_org_id(row["org_id"]),
        "type": event_type,
    }
    for name in OPTIONAL_FIELDS:
        value = row[name]
        if value is not None:
            body[name] = value
    if row["payload"] is not None:
        body["payload"] = orjson.Fragment(compact_jsonb(row["payload"]))
    body["created_at"] = row["created_at"]

    data = escape_line_breakers(orjson.dumps(body, option=orjson.OPT_UTC_Z))
    frame = b"id: %s\nevent: %s\ndata: %s\n\n" % (
        event_id.encode(),
        event_type.encode(),
        data,
    )
    return EncodedEvent(
        row["seq"], frame, event_type in TERMINAL_TYPES, row["created_at"]
    )


def compact_jsonb(text: str) -> str:
    """Remove the spaces jsonb's text output puts after ':' and ',' (departure 1)."""
    parts = JSON_STRING.split(text)
    # split() with one group alternates structure, string, structure, ...
    for index in range(0, len(parts), 2):
        parts[index] = parts[index].replace(": ", ":").replace(", ", ",")
    return "".join(parts)


def escape_line_breakers(data: bytes) -> bytes:
    if b"\xe2\x80" in data or b"\xc2\x85" in data:
        for raw, escaped in LINE_BREAKING_CHARACTERS:
            data = data.replace(raw, escaped)
    return data


# A process serves few runs and organisations at a time; caching their
# TypeIDs saves two base32 encodings per event.
@lru_cache(maxsize=4096)
def format_run_id(run_id: uuid.UUID) -> str:
    return format_id(RUN_PREFIX, run_id)


@lru_cache(maxsize=1024)
def format_org_id(org_id: uuid.UUID) -> str:
    return format_id(ORG_PREFIX, org_id)
