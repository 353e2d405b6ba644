"""SPEC section 1, "Cursor rules": precedence, emptiness, strictness, 400 and 204."""

import uuid

import httpx
import pytest

from app.ids import EVENT_PREFIX, format_id
from tests.fixtures.factories import (
    MakeRun,
    MakeTenant,
    Publish,
    PublishedEvent,
    Tenant,
    run_typeid,
)
from tests.fixtures.server import LiveServer
from tests.fixtures.sse import auth, read_all_events


async def make_finished_run(
    make_tenant: MakeTenant, make_run: MakeRun, publish: Publish
) -> tuple[Tenant, uuid.UUID, list[PublishedEvent]]:
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    events = [
        await publish(run_id, "run_enqueued"),
        await publish(run_id, "run_started"),
        await publish(run_id, "phase_changed", phase="preparing"),
        await publish(run_id, "phase_changed", phase="generating"),
        await publish(run_id, "run_completed", status="no_winner"),
    ]
    return tenant, run_id, events


async def test_cursor_absent_starts_at_the_first_event(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish: Publish,
) -> None:
    tenant, run_id, events = await make_finished_run(make_tenant, make_run, publish)

    received = await read_all_events(
        live_server.events_url(run_typeid(run_id)), tenant.key
    )

    assert [event["id"] for event in received] == [event.typeid for event in events]


@pytest.mark.parametrize(
    "header_name", ["Last-Event-ID", "last-event-id", "LAST-EVENT-ID"]
)
async def test_cursor_header_continues_strictly_after_the_event(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish: Publish,
    header_name: str,
) -> None:
    tenant, run_id, events = await make_finished_run(make_tenant, make_run, publish)

    received = await read_all_events(
        live_server.events_url(run_typeid(run_id)),
        tenant.key,
        headers={header_name: events[1].typeid},
    )

    assert [event["id"] for event in received] == [e.typeid for e in events[2:]]


async def test_cursor_query_parameter_works_without_the_header(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish: Publish,
) -> None:
    tenant, run_id, events = await make_finished_run(make_tenant, make_run, publish)

    received = await read_all_events(
        live_server.events_url(run_typeid(run_id)),
        tenant.key,
        params={"cursor": events[2].typeid},
    )

    assert [event["id"] for event in received] == [e.typeid for e in events[3:]]


async def test_cursor_header_wins_over_the_query_parameter(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish: Publish,
) -> None:
    """A browser EventSource updates the header on reconnect but keeps its URL."""
    tenant, run_id, events = await make_finished_run(make_tenant, make_run, publish)

    received = await read_all_events(
        live_server.events_url(run_typeid(run_id)),
        tenant.key,
        headers={"Last-Event-ID": events[3].typeid},
        params={"cursor": events[0].typeid},
    )

    assert [event["id"] for event in received] == [events[4].typeid]


@pytest.mark.parametrize("where", ["header", "query"])
async def test_cursor_empty_value_means_no_cursor(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish: Publish,
    where: str,
) -> None:
    tenant, run_id, events = await make_finished_run(make_tenant, make_run, publish)
    headers = {"Last-Event-ID": ""} if where == "header" else {}
    params = {"cursor": ""} if where == "query" else {}

    received = await read_all_events(
        live_server.events_url(run_typeid(run_id)),
        tenant.key,
        headers=headers,
        params=params,
    )

    assert len(received) == len(events)


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "evt_",
        "evt_01H455VB4PEX5VSKNK084SN02Q",
        "run_01h455vb4pex5vsknk084sn02q",
        "evt_" + "0" * 10_000,
        "'; DROP TABLE run_events; --",
    ],
)
async def test_cursor_malformed_is_400(
    live_server: LiveServer, make_tenant: MakeTenant, make_run: MakeRun, cursor: str
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)

    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(
            live_server.events_url(run_typeid(run_id)),
            headers=auth(tenant.key),
            params={"cursor": cursor},
        )

    assert response.status_code == 400
    assert "without" in response.json()["detail"]


async def test_cursor_not_of_this_run_gets_the_same_words_whoever_owns_it(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish: Publish,
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    await publish(run_id, "run_enqueued")
    sibling_event = await publish(await make_run(tenant), "run_enqueued")
    stranger = await make_tenant("stranger")
    foreign_event = await publish(await make_run(stranger), "run_enqueued")
    unknown_event = format_id(EVENT_PREFIX, uuid.uuid4())

    details = []
    async with httpx.AsyncClient(timeout=10) as client:
        for cursor in (unknown_event, sibling_event.typeid, foreign_event.typeid):
            response = await client.get(
                live_server.events_url(run_typeid(run_id)),
                headers=auth(tenant.key, **{"Last-Event-ID": cursor}),
            )
            assert response.status_code == 400
            details.append(response.json()["detail"])

    assert len(set(details)) == 1


async def test_cursor_at_the_terminal_event_is_204_with_an_empty_body(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish: Publish,
) -> None:
    tenant, run_id, events = await make_finished_run(make_tenant, make_run, publish)

    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(
            live_server.events_url(run_typeid(run_id)),
            headers=auth(tenant.key, **{"Last-Event-ID": events[-1].typeid}),
        )

    assert response.status_code == 204
    assert response.content == b""
