"""Shared fixtures: a throwaway PostgreSQL database, factories, a live server.

The database comes from TEST_DATABASE_URL or DATABASE_URL when set (a fresh
database is created on that server and dropped afterwards), otherwise from an
embedded PostgreSQL 16 started in a temporary folder.
"""

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from app.db.engine import create_engine, to_asyncpg_dsn
from app.db.migrate import upgrade_to_head
from tests.fixtures.postgres import throwaway_database
from tests.fixtures.server import LiveServer, start_live_server

pytest_plugins = ["tests.fixtures.factories"]


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A migrated, empty database for this test session."""
    server_url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    with throwaway_database(server_url) as url:
        yield url


@pytest.fixture(scope="session")
async def migrated_database_url(database_url: str) -> str:
    engine = create_engine(database_url, pool_size=1)
    await upgrade_to_head(engine)
    await engine.dispose()
    return database_url


@pytest.fixture
async def db(migrated_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain asyncpg connection for arranging and inspecting rows."""
    conn = await asyncpg.connect(to_asyncpg_dsn(migrated_database_url))
    yield conn
    await conn.close()


@pytest.fixture(scope="session")
def live_server(migrated_database_url: str) -> Iterator[LiveServer]:
    """The service on a free loopback port, shared by the tests that only read."""
    with start_live_server(migrated_database_url) as server:
        yield server


@pytest.fixture
def own_database(migrated_database_url: str) -> Iterator[Callable[[], Awaitable[str]]]:
    """Make migrated databases of a test's own on the session's cluster, so
    that it can count and kill sessions without touching other servers."""
    stack = contextlib.ExitStack()
    cluster_url = make_url(migrated_database_url).set(database="postgres")

    async def create() -> str:
        url = stack.enter_context(
            throwaway_database(cluster_url.render_as_string(hide_password=False))
        )
        engine = create_engine(url, pool_size=1)
        await upgrade_to_head(engine)
        await engine.dispose()
        return url

    with stack:
        yield create


@pytest.fixture
def isolated_server(
    own_database: Callable[[], Awaitable[str]],
) -> Iterator[Callable[..., Awaitable[tuple[LiveServer, str]]]]:
    """Start a server on a database of its own; returns it and an asyncpg DSN."""
    stack = contextlib.ExitStack()

    async def start(**overrides: Any) -> tuple[LiveServer, str]:
        url = await own_database()
        server = stack.enter_context(start_live_server(url, **overrides))
        return server, to_asyncpg_dsn(url)

    with stack:
        yield start
