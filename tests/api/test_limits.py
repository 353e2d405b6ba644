"""Limits that keep one client or customer from exhausting a process."""

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import httpx

from tests.fixtures.factories import run_typeid, seed_run
from tests.fixtures.server import LiveServer
from tests.fixtures.sse import auth, open_stream

IsolatedServer = Callable[..., Awaitable[tuple[LiveServer, str]]]


async def test_streams_past_the_org_limit_get_429_until_one_closes(
    isolated_server: IsolatedServer,
) -> None:
    server, dsn = await isolated_server(max_streams_per_org=2)
    admin = await asyncpg.connect(dsn)
    key, run_id = await seed_run(admin)
    await admin.close()
    url = server.events_url(run_typeid(run_id))

    async with httpx.AsyncClient(timeout=10) as client:
        async with open_stream(url, key) as first, open_stream(url, key):
            await first.next_frame()
            refused = await client.get(url, headers=auth(key))

        async def status_of_a_new_stream() -> int:
            async with client.stream("GET", url, headers=auth(key)) as response:
                return response.status_code

        # Closing a stream gives its slot back as soon as the server notices.
        async with asyncio.timeout(10):
            while (reopened := await status_of_a_new_stream()) == 429:
                await asyncio.sleep(0.02)

    assert refused.status_code == 429
    assert refused.json()["code"] == "too_many_streams"
    assert int(refused.headers["retry-after"]) > 0
    assert reopened == 200


async def test_oversized_headers_get_a_clean_error(live_server: LiveServer) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(
            live_server.events_url("run_x"), headers={"X-Padding": "a" * 200_000}
        )

    assert 400 <= response.status_code < 500
