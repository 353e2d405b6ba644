"""Properties of the TypeID and UUID parsers that guard every path id and cursor."""

import uuid
from collections.abc import Callable

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

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
