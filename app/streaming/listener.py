"""The process's one LISTEN connection, kept alive and handed to the feeds.

The connection is asyncpg's own, outside the query pool: a pooled connection
would be reset (and its LISTEN dropped) when returned, and a transaction-mode
pooler cannot carry LISTEN at all. A lost connection is noticed two ways:
asyncpg's termination callback for a closed socket, and a periodic check
query for a half-open one that never closes. Either way the listener
reconnects with backoff and asks every feed to resync, because whatever was
committed during the outage was never notified.

The check is a notification the listener sends itself: it proves the whole
path (socket, session, LISTEN) rather than only that a query answers, and it
fails loudly when DATABASE_URL goes through a transaction-mode pooler, where
LISTEN is accepted but nothing is ever delivered.
"""

import asyncio
import itertools
import logging
import os
import random
import secrets
import time
from typing import Any

import asyncpg

from app import metrics
from app.db.engine import LISTENER_APPLICATION_NAME
from app.streaming.feeds import RunFeeds

logger = logging.getLogger(__name__)

CHANNEL = "selftune_run_events"

RECONNECT_FIRST_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 5.0

CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


class Listener:
    """Keeps one LISTEN session open and routes its notifications to the feeds.

    Args:
        dsn: an asyncpg DSN for the events database.
        feeds: where notifications go, and who resyncs after a reconnect.
        check_seconds: how often the session is probed; a probe that does
            not answer within the same time counts as a lost connection, so
            a half-open connection is noticed within twice this.
    """

    def __init__(self, dsn: str, feeds: RunFeeds, check_seconds: float) -> None:
        self.dsn = dsn
        self.feeds = feeds
        self.check_seconds = check_seconds
        self.connected = asyncio.Event()
        self.connection_count = 0
        self.task: asyncio.Task[None] | None = None
        self.probe_channel = f"selftune_probe_{os.getpid()}_{secrets.token_hex(4)}"
        self.probe_numbers = itertools.count()
        self.probes: dict[str, asyncio.Future[None]] = {}

    @property
    def is_connected(self) -> bool:
        return self.connected.is_set()

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name="listener")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def wait_connected(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        """Connect, listen and reconnect until cancelled."""
        delay = RECONNECT_FIRST_SECONDS
        while True:
            connection = await self.connect_or_none()
            if connection is None:
                # Jitter keeps many processes from reconnecting in lockstep
                # after a database restart.
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)
                continue

            delay = RECONNECT_FIRST_SECONDS
            try:
                await self.listen_until_lost(connection)
            except CONNECTION_ERRORS:
                logger.warning("listener.lost_while_subscribing")
            except Exception:
                # The top of the listener task: anything unexpected is logged
                # and the loop reconnects, because a dead listener would
                # silently freeze every stream of the process.
                logger.exception("listener.failed")
                await asyncio.sleep(RECONNECT_MAX_SECONDS)
            finally:
                self.connected.clear()
                metrics.LISTENER_CONNECTED.set(0)
                connection.terminate()

    async def connect_or_none(self) -> Any:
        try:
            connection = await asyncpg.connect(
                self.dsn,
                timeout=self.check_seconds * 2,
                server_settings={"application_name": LISTENER_APPLICATION_NAME},
            )
        except CONNECTION_ERRORS as exc:
            # The class says enough (refused, timed out, auth) and, unlike the
            # message, never carries a part of the DSN.
            logger.warning(
                "listener.connect_failed", extra={"error": type(exc).__name__}
            )
            return None
        return connection

    async def listen_until_lost(self, connection: Any) -> None:
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _conn: lost.set())
        await connection.add_listener(CHANNEL, self.on_notification)
        await connection.add_listener(self.probe_channel, self.on_probe)
        if not await self.probe(connection):
            logger.error(
                "listener.probe_failed",
                extra={
                    "hint": "LISTEN receives nothing; DATABASE_URL must reach "
                    "PostgreSQL directly or through a session-mode pooler"
                },
            )
            return

        # The order matters: LISTEN is active before the feeds resync, so an
        # event is either notified or found by the resync read, or both.
        self.connected.set()
        metrics.LISTENER_CONNECTED.set(1)
        started = time.monotonic()
        if self.connection_count:
            metrics.LISTENER_RECONNECTS.inc()
            logger.warning(
                "listener.reconnected", extra={"reconnects": self.connection_count}
            )
        else:
            logger.info("listener.connected")
        self.connection_count += 1
        self.feeds.resync_all()

        while not lost.is_set():
            try:
                await asyncio.wait_for(lost.wait(), self.check_seconds)
                break
            except TimeoutError:
                pass
            if not await self.probe(connection):
                break

        logger.warning(
            "listener.lost",
            extra={"connected_s": round(time.monotonic() - started, 1)},
        )

    async def probe(self, connection: Any) -> bool:
        """Notify our own probe channel and wait for the echo."""
        token = str(next(self.probe_numbers))
        echo = asyncio.get_running_loop().create_future()
        self.probes[token] = echo
        try:
            async with asyncio.timeout(self.check_seconds):
                await connection.execute(
                    "SELECT pg_notify($1, $2)", self.probe_channel, token
                )
                await echo
        except CONNECTION_ERRORS:
            return False
        finally:
            self.probes.pop(token, None)
        return True

    def on_probe(self, _connection: Any, _pid: int, _channel: str, token: str) -> None:
        echo = self.probes.get(token)
        if echo is not None and not echo.done():
            echo.set_result(None)

    def on_notification(
        self, _connection: Any, _pid: int, _channel: str, payload: str
    ) -> None:
        metrics.NOTIFICATIONS.inc()
        self.feeds.notify(payload)
