"""The OpenAPI document describes the stream fully; CORS lets allowed pages in."""

import json
import logging
from collections.abc import Awaitable, Callable

import asyncpg
import httpx

from app.logging import JsonFormatter
from tests.fixtures.factories import run_typeid, seed_run
from tests.fixtures.server import LiveServer
from tests.fixtures.sse import auth

IsolatedServer = Callable[..., Awaitable[tuple[LiveServer, str]]]
ORIGIN = "http://app.test"


async def test_openapi_describes_the_stream_its_events_and_every_error(
    live_server: LiveServer,
) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        document = (await client.get(f"{live_server.base_url}/openapi.json")).json()

    route = document["paths"]["/api/v1/improve-runs/{run_id}/events"]["get"]
    responses = route["responses"]
    stream = responses["200"]["content"]["text/event-stream"]
    event_schema = document["components"]["schemas"]["RunEvent"]
    assert "retry: 3000" in stream["example"]
    assert "X-Run-Status" in responses["200"]["headers"]
    assert "204" in responses
    for status in ("400", "401", "403", "404", "410", "429", "503"):
        body = responses[status]["content"]["application/json"]
        assert body["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
        assert set(body["example"]) == {"detail", "code"}
    assert len(event_schema["properties"]["type"]["enum"]) == 8
    assert "422" not in responses


async def test_cors_preflight_and_stream_for_an_allowed_origin(
    isolated_server: IsolatedServer,
) -> None:
    server, dsn = await isolated_server(allowed_origins=ORIGIN)
    admin = await asyncpg.connect(dsn)
    key, run_id = await seed_run(admin)
    await admin.execute(
        "INSERT INTO run_events (run_id, type, status)"
        " VALUES ($1, 'run_failed', 'failed')",
        run_id,
    )
    await admin.close()
    url = server.events_url(run_typeid(run_id))

    async with httpx.AsyncClient(timeout=10) as client:
        preflight = await client.options(
            url,
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization,last-event-id",
            },
        )
        stranger = await client.options(
            url,
            headers={
                "Origin": "http://evil.test",
                "Access-Control-Request-Method": "GET",
            },
        )
        response = await client.get(url, headers=auth(key, Origin=ORIGIN))

    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed
    assert "last-event-id" in allowed
    assert stranger.status_code == 400
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "x-run-status" in response.headers["access-control-expose-headers"].lower()
    assert "event: run_failed" in response.text


def test_json_log_lines_carry_the_event_and_its_fields() -> None:
    record = logging.LogRecord(
        "app.x", logging.INFO, "f.py", 1, "stream.closed", None, None
    )
    record.run_id = "r1"
    record.events_sent = 3

    line = json.loads(JsonFormatter().format(record))

    assert line["event"] == "stream.closed"
    assert line["run_id"] == "r1"
    assert line["events_sent"] == 3
    assert line["level"] == "info"
