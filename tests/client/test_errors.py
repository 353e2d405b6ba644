"""The client's typed errors, from the real server wherever it can give them."""

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import httpx
import pytest

from app.client import (
    AuthenticationError,
    BadRequestError,
    ConnectionFailedError,
    InvalidCursorError,
    PermissionDeniedError,
    ProtocolError,
    ResponseError,
    RunEvent,
    RunEventIterator,
    RunEventsClient,
    RunNotFoundError,
    RunPrunedError,
    ServiceUnavailableError,
    TooManyStreamsError,
)
from app.db import events as event_queries
from app.db import retention
from app.ids import RUN_PREFIX, format_id
from tests.client.conftest import PublishLifecycle
from tests.client.relay import Relay
from tests.fixtures.factories import MakeRun, MakeTenant, Publish, run_typeid, seed_run
from tests.fixtures.server import LiveServer, find_free_port

IsolatedServer = Callable[..., Awaitable[tuple[LiveServer, str]]]

TIMEOUT_SECONDS = 15.0


async def read_first(
    base_url: str, key: str, run: str, *, after: str | None = None
) -> RunEvent | None:
    async with (
        RunEventsClient(base_url, key) as client,
        client.follow(run, after=after) as events,
        asyncio.timeout(TIMEOUT_SECONDS),
    ):
        return await anext(events, None)


async def test_follow_with_an_unknown_key_raises_authentication_error(
    live_server: LiveServer, make_tenant: MakeTenant, make_run: MakeRun
) -> None:
    run_id = await make_run(await make_tenant())
    key = "st_test_" + "x" * 40

    with pytest.raises(AuthenticationError) as raised:
        await read_first(live_server.base_url, key, run_typeid(run_id))

    assert (raised.value.status_code, raised.value.code) == (401, "not_authenticated")
    assert raised.value.detail
    assert key not in str(raised.value)


async def test_follow_of_another_organisations_run_raises_permission_denied(
    live_server: LiveServer, make_tenant: MakeTenant, make_run: MakeRun
) -> None:
    run_id = await make_run(await make_tenant("owner"))
    stranger = await make_tenant("stranger")

    with pytest.raises(PermissionDeniedError) as raised:
        await read_first(live_server.base_url, stranger.key, run_typeid(run_id))

    assert (raised.value.status_code, raised.value.code) == (403, "run_forbidden")
    assert "another organisation" in raised.value.detail


async def test_follow_of_an_unknown_run_raises_run_not_found(
    live_server: LiveServer, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant()
    run = format_id(RUN_PREFIX, uuid.uuid4())

    with pytest.raises(RunNotFoundError) as raised:
        await read_first(live_server.base_url, tenant.key, run)

    assert (raised.value.status_code, raised.value.code) == (404, "run_not_found")


async def test_follow_after_another_runs_event_raises_invalid_cursor(
    live_server: LiveServer,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish: Publish,
) -> None:
    tenant = await make_tenant()
    run_id, other_run_id = await make_run(tenant), await make_run(tenant)
    other_event = await publish(other_run_id, "run_enqueued")

    with pytest.raises(InvalidCursorError) as raised:
        await read_first(
            live_server.base_url,
            tenant.key,
            run_typeid(run_id),
            after=other_event.typeid,
        )

    assert (raised.value.status_code, raised.value.code) == (400, "invalid_cursor")
    assert "start again" in raised.value.detail


async def test_follow_of_a_pruned_run_raises_run_pruned(
    live_server: LiveServer,
    db: asyncpg.Connection,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish_lifecycle: PublishLifecycle,
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    await publish_lifecycle(run_id)
    await retention.prune_run(db, run_id)

    with pytest.raises(RunPrunedError) as raised:
        await read_first(live_server.base_url, tenant.key, run_typeid(run_id))

    assert (raised.value.status_code, raised.value.code) == (410, "run_pruned")


async def test_follow_without_a_runtime_raises_service_unavailable_at_once(
    live_server: LiveServer, make_tenant: MakeTenant, make_run: MakeRun
) -> None:
    tenant = await make_tenant(has_runtime=False)
    run_id = await make_run(tenant)

    async with RunEventsClient(live_server.base_url, tenant.key) as client:
        iterator = client.follow(run_typeid(run_id))
        with pytest.raises(ServiceUnavailableError) as raised:
            await asyncio.wait_for(anext(iterator), TIMEOUT_SECONDS)

    assert (raised.value.status_code, raised.value.code) == (503, "runtime_unavailable")
    assert raised.value.retry_after is None
    assert iterator.reconnects == 0


async def open_limited_server(
    isolated_server: IsolatedServer,
) -> tuple[LiveServer, str, str]:
    """A server allowing one stream per organisation, and a run with one event."""
    server, dsn = await isolated_server(max_streams_per_org=1)
    admin = await asyncpg.connect(dsn)
    try:
        key, run_id = await seed_run(admin)
        await event_queries.publish_event(
            admin, run_id, "run_enqueued", status="queued"
        )
    finally:
        await admin.close()
    return server, key, run_typeid(run_id)


async def test_follow_past_the_stream_limit_raises_too_many_streams(
    isolated_server: IsolatedServer,
) -> None:
    server, key, run = await open_limited_server(isolated_server)

    async with (
        RunEventsClient(server.base_url, key) as holder,
        RunEventsClient(server.base_url, key, max_retries=0) as refused,
        asyncio.timeout(TIMEOUT_SECONDS),
    ):
        held = holder.follow(run)
        await anext(held)
        with pytest.raises(TooManyStreamsError) as raised:
            await anext(refused.follow(run))

    assert (raised.value.status_code, raised.value.code) == (429, "too_many_streams")
    assert raised.value.retry_after is not None
    assert raised.value.retry_after > 0


async def test_follow_retries_too_many_streams_until_a_slot_frees(
    isolated_server: IsolatedServer,
) -> None:
    server, key, run = await open_limited_server(isolated_server)

    async with (
        RunEventsClient(server.base_url, key) as holder,
        RunEventsClient(
            server.base_url, key, max_retries=None, max_retry_delay_seconds=0.02
        ) as waiting,
        asyncio.timeout(TIMEOUT_SECONDS),
    ):
        held = holder.follow(run)
        first = await anext(held)
        waiter = waiting.follow(run)
        arrival = asyncio.create_task(anext(waiter))
        while waiter.reconnects == 0:
            await asyncio.sleep(0.01)
        await held.aclose()
        second = await arrival

    assert second == first
    assert waiter.reconnects >= 1


async def test_follow_when_nothing_listens_raises_connection_failed() -> None:
    base_url = f"http://127.0.0.1:{find_free_port()}"

    async with RunEventsClient(base_url, "st_test_key") as client:
        iterator = client.follow(format_id(RUN_PREFIX, uuid.uuid4()))
        with pytest.raises(ConnectionFailedError) as raised:
            await asyncio.wait_for(anext(iterator), TIMEOUT_SECONDS)

    assert isinstance(raised.value.__cause__, httpx.ConnectError)
    assert iterator.reconnects == 0


async def test_follow_gives_up_after_max_retries_once_the_server_is_gone(
    relay: Relay,
    make_tenant: MakeTenant,
    make_run: MakeRun,
    publish_lifecycle: PublishLifecycle,
) -> None:
    tenant = await make_tenant()
    run_id = await make_run(tenant)
    await publish_lifecycle(run_id, outcome=None)

    async with RunEventsClient(
        f"http://127.0.0.1:{relay.port}",
        tenant.key,
        retry_delay_seconds=0.01,
        max_retries=2,
    ) as client:
        iterator = client.follow(run_typeid(run_id))
        await asyncio.wait_for(anext(iterator), TIMEOUT_SECONDS)
        relay.upstream_port = find_free_port()
        relay.cut()
        with pytest.raises(ConnectionFailedError):
            await asyncio.wait_for(read_rest(iterator), TIMEOUT_SECONDS)

    assert iterator.reconnects == 2
    assert relay.connections == 3


async def read_rest(iterator: RunEventIterator) -> list[RunEvent]:
    return [event async for event in iterator]


def serve_once(status: int, content_type: str, body: bytes) -> httpx.MockTransport:
    return httpx.MockTransport(
        lambda _request: httpx.Response(
            status, headers={"Content-Type": content_type}, content=body
        )
    )


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        pytest.param("text/html", b"<html>hello</html>", id="not-a-stream"),
        pytest.param("text/event-stream", b"data: {not json\n\n", id="bad-json"),
        pytest.param("text/event-stream", b'data: {"id": "evt_1"}\n\n', id="no-type"),
    ],
)
async def test_follow_of_something_else_than_an_event_stream_raises_protocol_error(
    content_type: str, body: bytes
) -> None:
    transport = serve_once(200, content_type, body)

    async with RunEventsClient("http://test", "key", transport=transport) as client:
        with pytest.raises(ProtocolError):
            await anext(client.follow("run_x"))


async def test_follow_through_a_failing_proxy_raises_its_status_and_text() -> None:
    transport = serve_once(502, "text/html", b"<h1>502 Bad Gateway</h1>\n")

    async with RunEventsClient("http://test", "key", transport=transport) as client:
        with pytest.raises(ResponseError) as raised:
            await anext(client.follow("run_x"))

    assert type(raised.value) is ResponseError
    assert (raised.value.status_code, raised.value.code) == (502, None)
    assert raised.value.detail == "<h1>502 Bad Gateway</h1>"


async def test_follow_refused_for_another_reason_raises_bad_request() -> None:
    body = b'{"detail": "the token is malformed", "code": "invalid_request"}'
    transport = serve_once(400, "application/json", body)

    async with RunEventsClient("http://test", "key", transport=transport) as client:
        with pytest.raises(BadRequestError) as raised:
            await anext(client.follow("run_x"))

    assert not isinstance(raised.value, InvalidCursorError)
    assert (raised.value.code, raised.value.detail) == (
        "invalid_request",
        "the token is malformed",
    )
