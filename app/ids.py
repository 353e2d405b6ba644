"""TypeIDs (`run_…`, `evt_…`, `org_…`) and the UUIDs they encode.

The database stores plain UUIDs; users only ever see TypeIDs, which
typeid-python encodes and validates (lowercase Crockford base32 only).
"""

import re
import uuid
from functools import lru_cache

from typeid import TypeID
from typeid.base32 import encode as encode_suffix
from typeid.validation import validate_prefix

RUN_PREFIX = "run"
EVENT_PREFIX = "evt"
ORG_PREFIX = "org"
KEY_PREFIX = "key"

HYPHENATED_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def format_id(prefix: str, value: uuid.UUID) -> str:
    """Render a UUID as a TypeID with the given prefix.

    Raises:
        PrefixValidationException: `prefix` is not one a TypeID may have.
    """
    # typeid-python's compiled codec, called directly. Per id of a fresh
    # asyncpg row: TypeID.from_uuid 1.2 µs (mostly the TypeID object around
    # this same codec), a base32 encoder written in Python 1.0 µs, this 0.3.
    return format_prefix(prefix) + encode_suffix(value.bytes)


@lru_cache(maxsize=64)
def format_prefix(prefix: str) -> str:
    """`prefix_`, or nothing for the empty prefix, which has no separator."""
    validate_prefix(prefix)
    return f"{prefix}_" if prefix else ""


def parse_typeid(text: str, prefix: str) -> uuid.UUID | None:
    """The UUID inside `text` if it is a well-formed TypeID of `prefix`."""
    if not text.startswith(prefix + "_") or len(text) != len(prefix) + 27:
        return None
    try:
        parsed = TypeID.from_string(text)
    except Exception:
        # typeid-python raises several unrelated exception types for bad input.
        return None
    if parsed.prefix != prefix:
        return None
    return uuid.UUID(str(parsed.uuid))


def parse_run_id(text: str) -> uuid.UUID | None:
    """A run id as SPEC accepts it: `run_` TypeID, or the hyphenated UUID."""
    if text.startswith(RUN_PREFIX + "_"):
        return parse_typeid(text, RUN_PREFIX)
    return parse_hyphenated_uuid(text)


def parse_org_id(text: str) -> uuid.UUID | None:
    if text.startswith(ORG_PREFIX + "_"):
        return parse_typeid(text, ORG_PREFIX)
    return parse_hyphenated_uuid(text)


def parse_event_id(text: str) -> uuid.UUID | None:
    return parse_typeid(text, EVENT_PREFIX)


def parse_hyphenated_uuid(text: str) -> uuid.UUID | None:
    # uuid.UUID() also takes braces, "urn:uuid:" and bare hex; SPEC allows only
    # the hyphenated form.
    if HYPHENATED_UUID.fullmatch(text) is None:
        return None
    return uuid.UUID(text)
