"""The client follows runs over a real socket: replay, live tail, resumes."""

import asyncio
import json
import signal
from datetime import timedelta

import pytest

from app.client import RunEvent, RunEventIterator, RunEventsClient
from app.ids import ORG_PREFIX, format_id
from tests.client.conftest import PublishLifecycle, port_of
from tests.client.relay import Relay, start_relay
from tests.fixtures.factories import MakeRun, MakeTenant, Publish, run_typeid
from tests.fixtures.server import LiveServer, run_serve_process

TIMEOUT_SECONDS = 15.0

# Reconnect at once where a test is not about the delay.
QUICK_RETRY_SECONDS = 0.01


async def read_all(events: RunEventIterator) -> list[RunEvent]:
    async with asyncio.timeout(TIMEOUT_SECONDS):
        return [event async for event in events]


async def read_some(events: RunEventIterator, count: int) -> list[RunEvent]:
    async with asyncio.timeout(TIMEOUT_SECONDS):
        return [await anext(events) for _ in range(count)]


async def test_follow_reads_a_finished_run_to_its_outcome(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish_lifecycle: PublishLifecycle,
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    published = await publish_lifecycle(run_id)

    async with RunEventsClient(live_server.base_url, tenant.key) as client:
        events = await read_all(client.follow(run_typeid(run_id)))

    assert [event.id for event in events] == [event.typeid for event in published]
    assert {event.run_id for event in events} == {run_typeid(run_id)}
    assert {event.org_id for event in events} == {format_id(ORG_PREFIX, tenant.org_id)}
    assert all(event.created_at.utcoffset() == timedelta(0) for event in events)
    enqueued, candidate, completed = events[0], events[4], events[-1]
    assert (enqueued.type, enqueued.status, enqueued.payload) == (
        "run_enqueued",
        "queued",
        None,
    )
    assert candidate.candidate_id == "cand_a"
    assert candidate.payload == {"score": 0.81, "baseline_score": 0.7, "revision": 1}
    assert (completed.is_terminal, completed.status) == (True, "succeeded")
    assert json.loads(completed.raw)["id"] == completed.id


async def test_follow_accepts_the_run_uuid(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish_lifecycle: PublishLifecycle,
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    published = await publish_lifecycle(run_id, "failed")

    async with RunEventsClient(live_server.base_url, tenant.key) as client:
        events = await read_all(client.follow(run_id))

    assert [event.id for event in events] == [event.typeid for event in published]


async def test_follow_after_an_event_continues_strictly_after_it(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish_lifecycle: PublishLifecycle,
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    published = await publish_lifecycle(run_id)

    async with RunEventsClient(live_server.base_url, tenant.key) as client:
        after = published[3].typeid
        events = await read_all(client.follow(run_typeid(run_id), after=after))

    assert [event.id for event in events] == [event.typeid for event in published[4:]]


async def test_follow_from_the_terminal_event_ends_without_events(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish_lifecycle: PublishLifecycle,
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    published = await publish_lifecycle(run_id, "cancelled")

    async with RunEventsClient(live_server.base_url, tenant.key) as client:
        iterator = client.follow(run_typeid(run_id), after=published[-1].typeid)
        events = await read_all(iterator)

    assert events == []
    assert iterator.reconnects == 0


async def test_follow_tails_a_live_run_as_events_commit(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish: Publish,
    publish_lifecycle: PublishLifecycle,
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    published = await publish_lifecycle(run_id, outcome=None)

    async with RunEventsClient(live_server.base_url, tenant.key) as client:
        iterator = client.follow(run_typeid(run_id))
        replayed = await read_some(iterator, len(published))
        proposal = await publish(run_id, "proposal_created", proposal_id="prop_a")
        live = await read_some(iterator, 1)
        completed = await publish(run_id, "run_completed", status="no_winner")
        rest = await read_all(iterator)

    assert [event.id for event in replayed] == [event.typeid for event in published]
    assert [(event.id, event.proposal_id) for event in live] == [
        (proposal.typeid, "prop_a")
    ]
    assert [(event.id, event.status) for event in rest] == [
        (completed.typeid, "no_winner")
    ]
    assert iterator.reconnects == 0


async def test_follow_resumes_after_a_drop_mid_frame_without_gaps_or_duplicates(
    relay: Relay,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish_lifecycle: PublishLifecycle,
) -> None:
    """The connection ends after the `id:` line of the fourth event, before its
    data: resuming from that id instead of the last whole event would skip it."""
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    published = await publish_lifecycle(run_id)
    relay.cut_after = f"id: {published[3].typeid}\nevent: ".encode()

    base_url = f"http://127.0.0.1:{relay.port}"
    async with RunEventsClient(
        base_url, tenant.key, retry_delay_seconds=QUICK_RETRY_SECONDS
    ) as client:
        iterator = client.follow(run_typeid(run_id))
        events = await read_all(iterator)

    assert [event.id for event in events] == [event.typeid for event in published]
    assert (relay.connections, iterator.reconnects) == (2, 1)


async def test_follow_resumes_a_live_run_after_its_connection_is_reset(
    relay: Relay,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish: Publish,
    publish_lifecycle: PublishLifecycle,
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    published = await publish_lifecycle(run_id, outcome=None)

    base_url = f"http://127.0.0.1:{relay.port}"
    async with RunEventsClient(
        base_url, tenant.key, retry_delay_seconds=QUICK_RETRY_SECONDS
    ) as client:
        iterator = client.follow(run_typeid(run_id))
        before = await read_some(iterator, len(published))
        relay.cut()
        published.append(await publish(run_id, "proposal_created"))
        published.append(await publish(run_id, "run_completed"))
        after = await read_all(iterator)

    events = before + after
    assert [event.id for event in events] == [event.typeid for event in published]
    assert iterator.reconnects >= 1
    assert relay.connections == 1 + iterator.reconnects


async def test_follow_resumes_on_another_instance_after_a_shutdown(
    migrated_database_url: str,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish: Publish,
    publish_lifecycle: PublishLifecycle,
) -> None:
    """SIGTERM ends the stream cleanly but before the run's end; the client
    waits the server's `retry:` and resumes on the instance that remains."""
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    published = await publish_lifecycle(run_id, outcome=None)

    async with (
        run_serve_process(migrated_database_url, RETRY_MS="50") as first,
        run_serve_process(migrated_database_url, RETRY_MS="50") as second,
        start_relay(port_of(first.base_url)) as relay,
        RunEventsClient(f"http://127.0.0.1:{relay.port}", tenant.key) as client,
    ):
        iterator = client.follow(run_typeid(run_id))
        before = await read_some(iterator, len(published))
        relay.upstream_port = port_of(second.base_url)
        first.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(first.process.wait, TIMEOUT_SECONDS)
        published.append(await publish(run_id, "run_completed"))
        after = await read_all(iterator)

    events = before + after
    assert [event.id for event in events] == [event.typeid for event in published]
    assert (iterator.reconnects, relay.connections) == (1, 2)
    assert iterator.retry_delay_seconds == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("cap_seconds", "override_seconds", "expected_seconds"),
    [
        pytest.param(30.0, None, 3.0, id="server-retry"),
        pytest.param(1.0, None, 1.0, id="capped"),
        pytest.param(30.0, 0.25, 0.25, id="override"),
    ],
)
async def test_follow_takes_its_reconnect_delay_from_the_stream_retry_field(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish_lifecycle: PublishLifecycle,
    cap_seconds: float,
    override_seconds: float | None,
    expected_seconds: float,
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    await publish_lifecycle(run_id)

    async with RunEventsClient(
        live_server.base_url,
        tenant.key,
        retry_delay_seconds=override_seconds,
        max_retry_delay_seconds=cap_seconds,
    ) as client:
        iterator = client.follow(run_typeid(run_id))
        await read_some(iterator, 1)
        await iterator.aclose()

    assert iterator.server_retry_ms == live_server.settings.retry_ms
    assert iterator.retry_delay_seconds == expected_seconds
