"""Fixtures for the publish contract: both writers, extra sessions, a listener."""

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from app.db.engine import to_asyncpg_dsn
from tests.db.backends import Connect
from tests.db.notifications import CHANNEL, Notifications
from tests.db.writer import REFUSERS, WRITERS, Refuse, Write
from tests.fixtures.factories import MakeRun, MakeTenant, Tenant

# Closing a session that a failed test left waiting on a lock must not hang
# the teardown; after this the connection is cut instead.
CLOSE_TIMEOUT_SECONDS = 5.0


@pytest.fixture(params=sorted(WRITERS))
def write(request: pytest.FixtureRequest) -> Write:
    """Each test that takes this runs once per writer: plain SQL, publish_event."""
    return WRITERS[request.param]


@pytest.fixture(params=sorted(REFUSERS))
def refuse(request: pytest.FixtureRequest) -> Refuse:
    return REFUSERS[request.param]


@pytest.fixture
async def tenant(make_tenant: MakeTenant) -> Tenant:
    return await make_tenant()


@pytest.fixture
async def run_id(make_run: MakeRun, tenant: Tenant) -> uuid.UUID:
    """A fresh run of this test's own tenant, with no events."""
    return await make_run(tenant)


@pytest.fixture
async def connect(migrated_database_url: str) -> AsyncIterator[Connect]:
    """Open more sessions on the test database; all are closed afterwards."""
    opened: list[asyncpg.Connection] = []

    async def open_connection() -> asyncpg.Connection:
        conn = await asyncpg.connect(to_asyncpg_dsn(migrated_database_url))
        opened.append(conn)
        return conn

    yield open_connection

    for conn in opened:
        await close_connection(conn)


async def close_connection(conn: asyncpg.Connection) -> None:
    try:
        await asyncio.wait_for(conn.close(), CLOSE_TIMEOUT_SECONDS)
    except (TimeoutError, asyncpg.InterfaceError):
        conn.terminate()


@pytest.fixture
async def notifications(connect: Connect) -> AsyncIterator[Notifications]:
    """LISTEN on the events channel from a session of its own."""
    received = Notifications()
    listener = await connect()

    def on_notification(
        conn: asyncpg.Connection, pid: int, channel: str, payload: str
    ) -> None:
        received.queue.put_nowait(payload)

    await listener.add_listener(CHANNEL, on_notification)
    yield received
    await listener.remove_listener(CHANNEL, on_notification)


@pytest.fixture
async def scratch_database_url(
    migrated_database_url: str,
) -> AsyncIterator[str]:
    """An empty, unmigrated database on the test server, dropped afterwards."""
    name = f"selftune_scratch_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(to_asyncpg_dsn(migrated_database_url))
    await admin.execute(f'CREATE DATABASE "{name}"')

    yield (
        make_url(migrated_database_url)
        .set(database=name)
        .render_as_string(hide_password=False)
    )

    try:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()
