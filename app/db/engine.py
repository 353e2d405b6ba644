"""The query pool: SQLAlchemy's async engine, handing out asyncpg connections.

SQLAlchemy owns the pool (size, timeouts, invalidation); the query modules
talk to the asyncpg connection underneath, because the replay and the live
tail read rows on a hot path where a Core result layer costs real time.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app import metrics
from app.errors import ServiceBusy, ServiceUnavailable

logger = logging.getLogger(__name__)

QUERY_APPLICATION_NAME = "selftune-events"
LISTENER_APPLICATION_NAME = "selftune-events-listener"

# A query that takes longer than this is stuck, not slow: every query the
# service runs is an index lookup or a bounded page.
COMMAND_TIMEOUT_SECONDS = 30.0

# How long a request waits for a free pooled connection before it is told the
# service is busy, rather than queueing forever behind a burst of replays.
POOL_TIMEOUT_SECONDS = 10.0

CONNECTION_LOST = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    InterfaceError,
    OperationalError,
    PoolTimeoutError,
    # Class 57: the server shut the session down (pg_terminate_backend,
    # restart) or cancelled the query.
    asyncpg.exceptions.OperatorInterventionError,
    # The session's protocol state was broken by a query cut short while the
    # server closed the session ("another operation is in progress").
    asyncpg.exceptions.InternalClientError,
)

UNREACHABLE = "the event database cannot be reached; try again shortly"
BUSY = (
    "the service is busy: no database connection came free within "
    f"{POOL_TIMEOUT_SECONDS:g} s; try again shortly"
)


def to_asyncpg_dsn(database_url: str) -> str:
    """The same URL in the form asyncpg itself accepts (no `+asyncpg`)."""
    return (
        make_url(database_url)
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )


def to_sqlalchemy_url(database_url: str) -> str:
    return (
        make_url(database_url)
        .set(drivername="postgresql+asyncpg")
        .render_as_string(hide_password=False)
    )


def create_engine(
    database_url: str,
    *,
    pool_size: int,
    connect_timeout: float = 10.0,
    pool_timeout: float = POOL_TIMEOUT_SECONDS,
) -> AsyncEngine:
    return create_async_engine(
        to_sqlalchemy_url(database_url),
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=pool_timeout,
        # SQLAlchemy's pre-ping costs three statements per checkout (BEGIN,
        # the ping, ROLLBACK) around every one-statement read; the checkout
        # check below catches the same dead connections without a round trip.
        pool_pre_ping=False,
        # jsonb arrives as PostgreSQL's own text: the encoder sends it on
        # compacted but otherwise untouched (app/streaming/sse.py).
        json_deserializer=str,
        connect_args={
            "server_settings": {"application_name": QUERY_APPLICATION_NAME},
            "timeout": connect_timeout,
            "command_timeout": COMMAND_TIMEOUT_SECONDS,
        },
    )


class Database:
    """The process's query pool, lent out one asyncpg connection at a time."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        pool_events = engine.sync_engine.pool
        # Registered first: a refused connection is never counted.
        event.listen(pool_events, "checkout", self.refuse_closed_connection)
        event.listen(pool_events, "checkout", self.count_checkout)
        event.listen(pool_events, "checkin", self.count_checkin)

    @staticmethod
    def refuse_closed_connection(dbapi_connection: Any, *_args: Any) -> None:
        """Make the pool replace a connection the server closed while it idled.

        A restart or pg_terminate_backend closes the socket of every pooled
        session; asyncpg sees the close as it happens, so asking it costs
        nothing. The pool retries the checkout with a fresh connection.
        """
        if dbapi_connection.driver_connection.is_closed():
            raise DisconnectionError("the database closed this pooled connection")

    @staticmethod
    def count_checkout(*_args: Any) -> None:
        metrics.POOL_CHECKED_OUT.inc()

    @staticmethod
    def count_checkin(*_args: Any) -> None:
        metrics.POOL_CHECKED_OUT.dec()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """Borrow a pooled connection; a lost database becomes ServiceUnavailable.

        A connection the database dropped is invalidated rather than returned
        to the pool, so the next borrower gets a fresh one.
        """
        try:
            sa_connection = await self.engine.connect()
        except PoolTimeoutError as exc:
            # Not an outage: a burst (a reconnect storm after a deploy) holds
            # every connection. Said as such, so no one goes looking for a
            # database that is up.
            raise ServiceBusy(BUSY) from exc
        except (*CONNECTION_LOST, DBAPIError) as exc:
            raise ServiceUnavailable(UNREACHABLE) from exc

        driver_connection = None
        try:
            raw = await sa_connection.get_raw_connection()
            driver_connection = raw.driver_connection
            yield driver_connection
        except CONNECTION_LOST as exc:
            await sa_connection.invalidate()
            raise ServiceUnavailable(UNREACHABLE) from exc
        except asyncio.CancelledError:
            # Cancelled mid-query (a client left during its replay read):
            # asyncpg may still be unwinding the query when the next borrower
            # arrives, which then fails with "another operation is in
            # progress". Such a session is closed, never lent again.
            if driver_connection is not None:
                driver_connection.terminate()
            await sa_connection.invalidate()
            raise
        finally:
            await sa_connection.close()

    async def dispose(self) -> None:
        await self.engine.dispose()
