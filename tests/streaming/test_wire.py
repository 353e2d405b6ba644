"""The wire format of SPEC section 1, "The stream", read byte by byte."""

import json
from typing import Any

import httpx
import pytest

from tests.fixtures.factories import (
    VALID_FIELDS,
    MakeRun,
    MakeTenant,
    Publish,
    run_typeid,
)
from tests.fixtures.server import LiveServer
from tests.fixtures.sse import auth, check_event_frame, open_stream, read_all_events

HOSTILE_PAYLOADS: list[dict[str, Any]] = [
    {"message": "line one\nline two\rline three\r\nline four"},
    {"message": "\n\nid: evt_forged\nevent: run_completed\ndata: {}\n\n"},
    {"message": "data: not a field", "nested": {"id:": "event:", "\n": "\r"}},
    {"separators": "\u2028\u2029\u0085\u000b\u000c\u001c\u001d\u001e"},
    {"astral": "😀🧪𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "cjk": "漢字かなカナ한국어", "combining": "e\u0301"},
    {"big_int": 123456789012345678901234567890, "decimal": 1.10, "neg": -0.5},
    {"deep": json.loads("[" * 200 + "]" * 200)},
    {"spaces": "a, b: c", "key, with: punct": [1, 2, {"x": "y, z"}]},
    {"quote": 'he said "hi", then \\ left: ok'},
    {"empty": {}, "list": [], "null": None, "bool": True},
]


@pytest.mark.parametrize("payload", HOSTILE_PAYLOADS)
async def test_wire_payload_arrives_as_stored_and_forges_nothing(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish: Publish,
    payload: dict[str, Any],
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    await publish(run_id, "phase_changed", payload=payload)
    await publish(run_id, "run_failed")

    events = await read_all_events(
        live_server.events_url(run_typeid(run_id)), tenant.key
    )

    assert [event["type"] for event in events] == ["phase_changed", "run_failed"]
    assert events[0]["payload"] == payload


async def test_wire_large_payload_arrives_whole(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish: Publish,
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    payload = {"blob": "漢😀\u2028x\n" * 40_000}
    await publish(run_id, "candidate_persisted", payload=payload)
    await publish(run_id, "run_cancelled")

    events = await read_all_events(
        live_server.events_url(run_typeid(run_id)), tenant.key
    )

    assert events[0]["payload"] == payload


async def test_wire_data_lines_never_hold_raw_line_breakers(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish: Publish,
) -> None:
    """Python's splitlines() cuts on U+2028 and U+0085; a data line must survive it."""
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    await publish(run_id, "phase_changed", payload=HOSTILE_PAYLOADS[3])
    await publish(run_id, "run_failed")

    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(
            live_server.events_url(run_typeid(run_id)), headers=auth(tenant.key)
        )

    data_lines = [
        line for line in response.text.splitlines() if line.startswith("data:")
    ]
    assert len(data_lines) == 2
    assert json.loads(data_lines[0][5:])["payload"] == HOSTILE_PAYLOADS[3]


async def test_wire_every_type_has_its_fields_and_nothing_null(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish: Publish,
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    published = []
    for event_type in VALID_FIELDS:
        if event_type not in ("run_failed", "run_cancelled"):
            published.append(await publish(run_id, event_type))

    events = await read_all_events(
        live_server.events_url(run_typeid(run_id)), tenant.key
    )

    assert [event["id"] for event in events] == [event.typeid for event in published]
    for event in events:
        expected = {"id", "run_id", "org_id", "type", "created_at"}
        expected |= set(VALID_FIELDS[event["type"]])
        assert set(event) == expected
        assert event["run_id"] == run_typeid(run_id)
        assert event["org_id"].startswith("org_")


async def test_wire_stream_opens_with_retry_and_has_the_spec_headers(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish: Publish,
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    await publish(run_id, "run_enqueued")

    async with open_stream(
        live_server.events_url(run_typeid(run_id)),
        tenant.key,
        headers={"Accept-Encoding": "gzip, br"},
    ) as reader:
        first = await reader.next_frame()
        second = await reader.next_frame()
        headers = reader.response.headers

    assert first is not None
    assert first.fields == [("retry", "3000")]
    assert second is not None
    check_event_frame(second)
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["cache-control"] in ("no-cache", "no-store")
    assert headers["x-accel-buffering"] == "no"
    assert "content-length" not in headers
    assert "content-encoding" not in headers
