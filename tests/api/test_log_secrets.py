"""Keys, read tokens, the database password and payloads never reach the logs.

A real `serve` process at LOG_LEVEL=debug is driven through every path a
secret travels (accepted, refused, revoked, misplaced keys; a read token; a
listener that reconnects), then its whole log is searched for them.
"""

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import Awaitable, Callable

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from app.db import events as event_queries
from app.db import keys as key_queries
from app.db import orgs as org_queries
from app.db.engine import LISTENER_APPLICATION_NAME, to_asyncpg_dsn
from app.keys import VISIBLE_PREFIX_LENGTH, generate_key, hash_key, visible_prefix
from tests.fixtures.factories import run_typeid, seed_run
from tests.fixtures.server import find_free_port, run_serve_process
from tests.fixtures.sse import auth, read_all_events

RECONNECT_TIMEOUT_SECONDS = 20.0


def secret_parts(secret: str, prefix_length: int) -> list[str]:
    """The secret, and its part past the shown prefix: neither may be logged."""
    return [secret, secret[prefix_length:]]


def with_password(database_url: str, password: str) -> str:
    # Trust authentication ignores the password, but the service still holds
    # it in its URL, as it would in production.
    return (
        make_url(database_url)
        .set(password=password)
        .render_as_string(hide_password=False)
    )


async def add_revoked_key(conn: asyncpg.Connection) -> str:
    org_id = await org_queries.create_org(conn, "revoked")
    key = generate_key(test=True)
    await key_queries.insert_key(
        conn, org_id, prefix=visible_prefix(key), key_hash=hash_key(key)
    )
    await key_queries.revoke_by_hash(conn, hash_key(key))
    return key


async def kill_listener_and_wait_for_reconnect(
    conn: asyncpg.Connection, logs: Callable[[], str]
) -> None:
    await conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = $1 AND datname = current_database()",
        LISTENER_APPLICATION_NAME,
    )
    async with asyncio.timeout(RECONNECT_TIMEOUT_SECONDS):
        while "listener.reconnected" not in logs():
            await asyncio.sleep(0.05)


async def test_serve_logs_no_key_token_or_password_at_debug(
    own_database: Callable[[], Awaitable[str]],
) -> None:
    """Every request shape that carries a secret, at the chattiest level."""
    database_url = await own_database()
    password = "pw-" + secrets.token_urlsafe(24)
    dsn = to_asyncpg_dsn(database_url)
    admin = await asyncpg.connect(dsn)
    key, run_id = await seed_run(admin)
    revoked_key = await add_revoked_key(admin)
    bogus_key = generate_key(test=True)
    await event_queries.publish_event(admin, run_id, "phase_changed", phase="a")
    await event_queries.publish_event(
        admin, run_id, "run_completed", status="succeeded"
    )

    async with (
        run_serve_process(
            with_password(database_url, password),
            LOG_LEVEL="debug",
            LISTENER_CHECK_SECONDS="0.5",
        ) as serve,
        httpx.AsyncClient(timeout=10) as client,
    ):
        url = serve.events_url(run_typeid(run_id))
        token_response = await client.post(
            url.removesuffix("/events") + "/read-tokens", headers=auth(key), json={}
        )
        read_token = token_response.json()["token"]
        await read_all_events(url, key)
        await read_all_events(url, read_token)
        refusals = [
            await client.get(url, headers=headers)
            for headers in (
                {"Authorization": f"bearer   {bogus_key}"},
                {"Authorization": f"Bearer {revoked_key}"},
                {"Authorization": f"Basic {key}"},
                {"Authorization": key},
                {"Authorization": f"Bearer {read_token}x"},
            )
        ]
        await kill_listener_and_wait_for_reconnect(admin, serve.logs)
        logs = serve.logs()
    await admin.close()

    assert token_response.status_code == 201
    assert [response.status_code for response in refusals] == [401] * 5
    assert "stream.opened" in logs
    assert "listener.lost" in logs
    forbidden = [
        *secret_parts(key, VISIBLE_PREFIX_LENGTH),
        *secret_parts(bogus_key, VISIBLE_PREFIX_LENGTH),
        *secret_parts(revoked_key, VISIBLE_PREFIX_LENGTH),
        *secret_parts(read_token, VISIBLE_PREFIX_LENGTH),
        password,
    ]
    leaks = [line for line in logs.splitlines() if any(s in line for s in forbidden)]
    assert leaks == []


async def test_serve_logs_no_payload_at_debug(
    own_database: Callable[[], Awaitable[str]],
) -> None:
    """A payload is customer data: it reaches the stream, never the log."""
    database_url = await own_database()
    admin = await asyncpg.connect(to_asyncpg_dsn(database_url))
    key, run_id = await seed_run(admin)
    marker = "payload-" + secrets.token_hex(16)
    await event_queries.publish_event(
        admin, run_id, "phase_changed", phase="a", payload={"note": marker}
    )
    await event_queries.publish_event(
        admin, run_id, "run_completed", status="succeeded"
    )
    await admin.close()

    async with run_serve_process(database_url, LOG_LEVEL="debug") as serve:
        events = await read_all_events(serve.events_url(run_typeid(run_id)), key)
        logs = serve.logs()

    assert events[0]["payload"] == {"note": marker}
    assert [line for line in logs.splitlines() if marker in line] == []


def test_serve_refusing_to_start_does_not_print_the_password() -> None:
    """An unreachable database is reported in one line that names no password."""
    password = "pw-" + secrets.token_urlsafe(24)
    url = f"postgresql://selftune:{password}@127.0.0.1:9/selftune"

    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli.main",
            "serve",
            "--port",
            str(find_free_port()),
        ],
        env={**os.environ, "DATABASE_URL": url, "DATABASE_CONNECT_TIMEOUT": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert finished.returncode != 0
    assert finished.stderr.strip()
    assert password not in finished.stdout + finished.stderr
