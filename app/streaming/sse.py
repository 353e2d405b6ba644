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
from functools import lru_cache
from typing import Any

import orjson

from app.db.events import TERMINAL_TYPES
from app.ids import EVENT_PREFIX, ORG_PREFIX, RUN_PREFIX, format_id

OPTIONAL_FIELDS = ("status", "phase", "candidate_id", "proposal_id")

PING_FRAME = b": ping\n\n"

# A JSON string literal, escapes included; everything between two of them is
# structure, where PostgreSQL's jsonb output puts a space after ':' and ','.
# Written as an unrolled loop (a run of plain characters, then one escape),
# which the regex engine scans twice as fast as one alternation a character.
JSON_STRING = re.compile(r'("[^"\\]*(?:\\.[^"\\]*)*")')

# Stand-ins for the escapes `\\` and `\"` while compact_jsonb splits on quotes,
# and the separator it joins structure with. PostgreSQL never prints a raw
# control character (inside strings they are escaped, outside there are none),
# and text holding one takes the regex path instead.
ESCAPED_BACKSLASH = "\x01"
ESCAPED_QUOTE = "\x02"
STRUCTURE_SEPARATOR = "\x00"

# Departure 2: UTF-8 bytes of U+2028, U+2029 and U+0085, their lead byte, and
# their escapes. UTF-8 is self-synchronising, so these sequences never occur
# inside another character and a byte-level replace is safe.
LINE_BREAKING_CHARACTERS = (
    (b"\xe2", b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2", b"\xe2\x80\xa9", b"\\u2029"),
    (b"\xc2", b"\xc2\x85", b"\\u0085"),
)


class EncodedEvent:
    """An event ready for the wire; the same bytes go to every stream.

    A plain class rather than a frozen dataclass, whose `__init__` sets each
    field through `object.__setattr__` and cost 4 % of a replay. Treat it as
    read-only all the same: one instance is shared by every stream.
    """

    __slots__ = ("seq", "frame", "is_terminal", "created_at")

    def __init__(
        self,
        seq: int,
        frame: bytes,
        is_terminal: bool,
        created_at: datetime.datetime,
    ) -> None:
        self.seq = seq
        self.frame = frame
        self.is_terminal = is_terminal
        self.created_at = created_at


# The run and organisation of the last row encoded, and their TypeIDs. Reads
# and feeds encode a page of one run at a time, and comparing asyncpg's UUIDs
# (memcmp) is cheaper than hashing them for the caches below, which computes
# their integer value first: 0.1 µs a row instead of 0.6.
last_run_ids: tuple[uuid.UUID, uuid.UUID, tuple[str, str]] = (
    uuid.UUID(int=0),
    uuid.UUID(int=0),
    (format_id(RUN_PREFIX, uuid.UUID(int=0)), format_id(ORG_PREFIX, uuid.UUID(int=0))),
)


def encode_retry(retry_ms: int) -> bytes:
    return b"retry: %d\n\n" % retry_ms


def encode_event(row: Any) -> EncodedEvent:
    """Encode one `run_events` row (as read by app.db.events) as an SSE frame."""
    event_id = format_id(EVENT_PREFIX, row["id"])
    event_type: str = row["type"]
    created_at: datetime.datetime = row["created_at"]
    run_id, org_id = format_run_and_org_ids(row["run_id"], row["org_id"])

    body: dict[str, Any] = {
        "id": event_id,
        "run_id": run_id,
        "org_id": org_id,
        "type": event_type,
    }
    for name in OPTIONAL_FIELDS:
        value = row[name]
        if value is not None:
            body[name] = value
    payload: str | None = row["payload"]
    if payload is not None:
        body["payload"] = orjson.Fragment(compact_jsonb(payload))
    body["created_at"] = created_at

    data = escape_line_breakers(orjson.dumps(body, option=orjson.OPT_UTC_Z))
    frame = b"id: %s\nevent: %s\ndata: %s\n\n" % (
        event_id.encode(),
        event_type.encode(),
        data,
    )
    return EncodedEvent(row["seq"], frame, event_type in TERMINAL_TYPES, created_at)


def compact_jsonb(text: str) -> str:
    """Remove the spaces jsonb's text output puts after ':' and ',' (departure 1).

    Splits on quotes, which all delimit strings once the escaped ones are
    masked, and compacts everything outside strings in one pass. Text that
    is not PostgreSQL's (an odd quote, an escape outside a string) goes to
    `compact_jsonb_by_regex` instead: on any text, the result is the regex's.
    """
    masked = text
    if "\\" in text:
        # `.` in JSON_STRING stops at a newline, so a backslash before one
        # ends a string there; only the regex reproduces that.
        if "\\\n" in text or ESCAPED_BACKSLASH in text or ESCAPED_QUOTE in text:
            return compact_jsonb_by_regex(text)
        # Left to right, pairs first: in `\\\"` the quote is escaped, in
        # `\\"` it is not. str.replace returns `text` itself if it finds none.
        masked = text.replace("\\\\", ESCAPED_BACKSLASH).replace('\\"', ESCAPED_QUOTE)
    if STRUCTURE_SEPARATOR in text:
        return compact_jsonb_by_regex(text)

    # Even indexes are structure, odd ones string contents, if the quotes pair.
    parts = masked.split('"')
    if len(parts) % 2 == 0:
        return compact_jsonb_by_regex(text)
    structure = STRUCTURE_SEPARATOR.join(parts[::2])
    if ESCAPED_QUOTE in structure:
        return compact_jsonb_by_regex(text)
    compacted = structure.replace(": ", ":").replace(", ", ",")
    parts[::2] = compacted.split(STRUCTURE_SEPARATOR)
    joined = '"'.join(parts)

    if masked is text:
        return joined
    return joined.replace(ESCAPED_BACKSLASH, "\\\\").replace(ESCAPED_QUOTE, '\\"')


def compact_jsonb_by_regex(text: str) -> str:
    parts = JSON_STRING.split(text)
    # split() with one group alternates structure, string, structure, ...
    for index in range(0, len(parts), 2):
        parts[index] = parts[index].replace(": ", ":").replace(", ", ",")
    return "".join(parts)


def escape_line_breakers(data: bytes) -> bytes:
    # isascii() and one-byte searches (memchr) read several bytes at a step;
    # a search for a longer sequence compares byte by byte and would cost as
    # much as the whole JSON encoding, so it runs only behind its lead byte.
    if data.isascii():
        return data
    for lead, raw, escaped in LINE_BREAKING_CHARACTERS:
        if lead in data and raw in data:
            data = data.replace(raw, escaped)
    return data


def format_run_and_org_ids(run_id: uuid.UUID, org_id: uuid.UUID) -> tuple[str, str]:
    global last_run_ids
    last = last_run_ids
    if run_id == last[0] and org_id == last[1]:
        return last[2]
    typeids = (format_run_id(run_id), format_org_id(org_id))
    last_run_ids = (run_id, org_id, typeids)
    return typeids


# A process serves few runs and organisations at a time; caching their
# TypeIDs saves two base32 encodings per event.
@lru_cache(maxsize=4096)
def format_run_id(run_id: uuid.UUID) -> str:
    return format_id(RUN_PREFIX, run_id)


@lru_cache(maxsize=1024)
def format_org_id(org_id: uuid.UUID) -> str:
    return format_id(ORG_PREFIX, org_id)
