"""Properties of the TypeID formatter, and of the TypeID and UUID parsers that
guard every path id and cursor."""

import uuid
from collections.abc import Callable

import pytest
from asyncpg.pgproto.pgproto import UUID as PgUUID
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from typeid import TypeID
from typeid.errors import PrefixValidationException

from app.ids import (
    EVENT_PREFIX,
    ORG_PREFIX,
    RUN_PREFIX,
    format_id,
    parse_event_id,
    parse_org_id,
    parse_run_id,
)

Parser = Callable[[str], uuid.UUID | None]

PARSERS: dict[str, Parser] = {
    RUN_PREFIX: parse_run_id,
    EVENT_PREFIX: parse_event_id,
    ORG_PREFIX: parse_org_id,
}

CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"

# Strings that get past the cheap checks (prefix and length) and so reach the
# TypeID decoder: base32-ish suffixes of the right length with noise mixed in.
NEAR_TYPEIDS = st.builds(
    lambda prefix, suffix: f"{prefix}_{suffix}",
    st.sampled_from([RUN_PREFIX, EVENT_PREFIX, ORG_PREFIX, "key", "RUN", "Run"]),
    st.text(
        alphabet=st.sampled_from(CROCKFORD + "ilouILOU0Z-_ \n\u0661\uff10é"),
        min_size=25,
        max_size=27,
    ),
)

# Hyphenated UUID look-alikes, including non-ASCII digits and stray spaces.
NEAR_UUIDS = st.from_regex(
    r"[0-9a-fA-F\u0661g ]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}"
    r"-[0-9a-fA-F]{4}-[0-9a-fA-F\n]{12}",
    fullmatch=True,
)

ANY_TEXT = st.text() | NEAR_TYPEIDS | NEAR_UUIDS

# Prefixes as the TypeID spec allows them: empty, or lower-case letters and
# underscores, starting and ending with a letter, at most 63 characters.
SPEC_PREFIXES = st.just("") | st.from_regex(
    r"[a-z]([a-z_]{0,61}[a-z])?", fullmatch=True
)

# The ends of the range, single bits and runs of bits either side of the
# 5-bit group boundaries, alternating bits.
EDGE_UUIDS = [
    uuid.UUID(int=value)
    for value in (
        0,
        1,
        31,
        32,
        2**125 - 1,
        2**125,
        2**127,
        2**128 - 1,
        int("0111110" * 18 + "01", 2),
        int("10" * 64, 2),
        int("01" * 64, 2),
    )
]


def encode_by_spec(prefix: str, value: uuid.UUID) -> str:
    """TypeID as its spec words it: the 128 bits behind two zero bits, read
    five at a time from the most significant end, in lowercase Crockford
    base32; `prefix_` in front unless the prefix is empty."""
    bits = value.int
    suffix = "".join(CROCKFORD[(bits >> shift) & 31] for shift in range(125, -1, -5))
    return f"{prefix}_{suffix}" if prefix else suffix


def format_with_typeid_python(prefix: str, value: uuid.UUID) -> str:
    # Annotated for uuid_utils.UUID, it reads only `.bytes` of the value.
    return str(TypeID.from_uuid(value, prefix))  # type: ignore[arg-type]


@settings(max_examples=1000)
@given(prefix=SPEC_PREFIXES, value=st.uuids(allow_nil=True))
@example(prefix="", value=EDGE_UUIDS[0])
def test_format_id_agrees_with_typeid_python_and_the_spec(
    prefix: str, value: uuid.UUID
) -> None:
    typeid = format_id(prefix, value)

    assert typeid == format_with_typeid_python(prefix, value)
    assert typeid == encode_by_spec(prefix, value)


@pytest.mark.parametrize("value", EDGE_UUIDS, ids=lambda value: f"{value.int:032x}")
@pytest.mark.parametrize("prefix", [RUN_PREFIX, EVENT_PREFIX, ORG_PREFIX, ""])
def test_format_id_renders_edge_values_exactly(prefix: str, value: uuid.UUID) -> None:
    typeid = format_id(prefix, value)

    assert typeid == format_with_typeid_python(prefix, value)
    assert typeid == encode_by_spec(prefix, value)
    assert len(typeid.rpartition("_")[2]) == 26


def test_format_id_renders_the_lowest_and_highest_uuids() -> None:
    assert format_id(RUN_PREFIX, uuid.UUID(int=0)) == "run_" + "0" * 26
    assert format_id(RUN_PREFIX, uuid.UUID(int=2**128 - 1)) == "run_7" + "z" * 25


@pytest.mark.parametrize("prefix", ["Run", "run-", "_run", "run_", "r" * 64, "é"])
def test_format_id_refuses_prefixes_a_typeid_cannot_have(prefix: str) -> None:
    with pytest.raises(PrefixValidationException):
        format_id(prefix, uuid.UUID(int=1))


@given(value=st.uuids())
def test_format_id_takes_asyncpg_uuids_like_the_standard_ones(
    value: uuid.UUID,
) -> None:
    """Rows carry asyncpg's own UUID class, a subclass of uuid.UUID."""
    from_asyncpg = PgUUID(value.bytes)

    assert format_id(EVENT_PREFIX, from_asyncpg) == format_id(EVENT_PREFIX, value)


@pytest.mark.parametrize("prefix", sorted(PARSERS))
@given(value=st.uuids())
def test_parse_id_reverses_format_id(prefix: str, value: uuid.UUID) -> None:
    assert PARSERS[prefix](format_id(prefix, value)) == value


@given(value=st.uuids())
def test_parse_run_id_accepts_hyphenated_uuids_in_either_case(
    value: uuid.UUID,
) -> None:
    assert parse_run_id(str(value)) == value
    assert parse_run_id(str(value).upper()) == value


@pytest.mark.parametrize("prefix", sorted(PARSERS))
@given(value=st.uuids())
def test_parse_id_rejects_uppercase_typeids(prefix: str, value: uuid.UUID) -> None:
    typeid = format_id(prefix, value)
    parse = PARSERS[prefix]

    assert parse(typeid.upper()) is None
    assert parse(f"{prefix}_{typeid.partition('_')[2].upper()}") is None


@pytest.mark.parametrize("prefix", sorted(PARSERS))
@given(
    other=st.sampled_from([RUN_PREFIX, EVENT_PREFIX, ORG_PREFIX, "key", "runs", "ru"]),
    value=st.uuids(),
)
def test_parse_id_rejects_other_prefixes(
    prefix: str, other: str, value: uuid.UUID
) -> None:
    assume(other != prefix)

    assert PARSERS[prefix](format_id(other, value)) is None


@given(value=st.uuids())
def test_parse_event_id_rejects_bare_uuids(value: uuid.UUID) -> None:
    """Only `evt_` TypeIDs are cursors (README, choices item 3)."""
    assert parse_event_id(str(value)) is None


@pytest.mark.parametrize("prefix", sorted(PARSERS))
@given(text=ANY_TEXT)
def test_parse_id_never_raises_and_accepts_only_canonical_spellings(
    prefix: str, text: str
) -> None:
    """Whatever the text, the parser answers None or the one UUID that
    renders back to the same text: no two spellings name the same id."""
    parsed = PARSERS[prefix](text)

    if parsed is not None:
        is_typeid = text == format_id(prefix, parsed)
        is_uuid = prefix != EVENT_PREFIX and text.lower() == str(parsed)
        assert is_typeid or is_uuid


def test_parse_run_id_rejects_typeids_beyond_128_bits() -> None:
    """A first suffix character above 7 would need 131 bits."""
    assert parse_run_id("run_7zzzzzzzzzzzzzzzzzzzzzzzzz") == uuid.UUID(int=2**128 - 1)
    assert parse_run_id("run_8zzzzzzzzzzzzzzzzzzzzzzzzz") is None
