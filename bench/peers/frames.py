"""The peers' wire encoding: the service's frame shape, with plain orjson.

The frames carry the same fields in the same order as the service's, so that
clients read the same bytes from every system; what is left out is the
service's payload compaction and line-breaker escaping (app/streaming/sse.py),
which make no difference to the benchmark's payloads.
"""

import uuid
from functools import lru_cache
from typing import Any

import orjson

from app.ids import format_id

RETRY_FRAME = b"retry: 3000\n\n"
OPTIONAL_FIELDS = ("status", "phase", "candidate_id", "proposal_id")
TERMINAL_TYPES = frozenset({"run_completed", "run_failed", "run_cancelled"})

# The columns every peer reads, in the service's order.
READ_AFTER = """
SELECT id, run_id, org_id, seq, type, status, phase, candidate_id, proposal_id,
       payload, created_at
FROM run_events
WHERE run_id = $1 AND seq > $2
ORDER BY seq
LIMIT $3
"""

PAGE_SIZE = 500


@lru_cache(maxsize=4096)
def format_cached(prefix: str, value: uuid.UUID) -> str:
    return format_id(prefix, value)


def encode_row(row: Any) -> bytes:
    """One `run_events` row (asyncpg Record, jsonb as text) as one SSE frame."""
    event_id = format_id("evt", row["id"])
    body: dict[str, Any] = {
        "id": event_id,
        "run_id": format_cached("run", row["run_id"]),
        "org_id": format_cached("org", row["org_id"]),
        "type": row["type"],
    }
    for name in OPTIONAL_FIELDS:
        value = row[name]
        if value is not None:
            body[name] = value
    if row["payload"] is not None:
        body["payload"] = orjson.Fragment(row["payload"])
    body["created_at"] = row["created_at"]
    data = orjson.dumps(body, option=orjson.OPT_UTC_Z)
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (
        event_id.encode(),
        row["type"].encode(),
        data,
    )


def is_terminal(row: Any) -> bool:
    return row["type"] in TERMINAL_TYPES
