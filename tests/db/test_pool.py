"""The query pool under cancellation and killed sessions."""

import asyncio
import collections
import random

import asyncpg
import pytest

from app.db.engine import Database, create_engine, to_asyncpg_dsn
from app.errors import ServiceBusy, ServiceUnavailable


async def test_a_query_cut_short_by_cancellation_never_reaches_the_next_borrower(
    migrated_database_url: str,
) -> None:
    """A client that leaves mid-replay cancels its stream inside a read; the
    session is then mid-protocol and must not be lent to the next request
    (asyncpg would answer it "another operation is in progress")."""
    database = Database(create_engine(migrated_database_url, pool_size=1))
    started = asyncio.Event()

    async def slow_read() -> None:
        async with database.connection() as conn:
            started.set()
            await conn.fetchval("SELECT pg_sleep(5)")

    try:
        reader = asyncio.create_task(slow_read())
        await started.wait()
        # Past the wait, the sleep has been sent to the server.
        await asyncio.sleep(0.1)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)

        async with asyncio.timeout(10):
            async with database.connection() as conn:
                answer = await conn.fetchval("SELECT 42")
    finally:
        await database.dispose()

    assert answer == 42


async def test_sessions_killed_under_cancelled_reads_only_ever_fail_as_unavailable(
    migrated_database_url: str,
) -> None:
    """Reads cancelled at random (clients leaving) while every query session
    is terminated again and again: each read succeeds, is cancelled, or
    fails as ServiceUnavailable (a clean 503 or end of stream), never with
    asyncpg's internal state errors, which became 500s."""
    database = Database(create_engine(migrated_database_url, pool_size=2))
    admin = await asyncpg.connect(to_asyncpg_dsn(migrated_database_url))
    randomness = random.Random(7)
    outcomes: collections.Counter[str] = collections.Counter()
    stopping = asyncio.Event()

    async def kill_sessions_until_stopped() -> None:
        while not stopping.is_set():
            await admin.execute(KILL_QUERY_SESSIONS)
            await asyncio.sleep(randomness.random() * 0.03)

    async def read() -> None:
        try:
            async with database.connection() as conn:
                await conn.fetch(LARGE_READ)
            outcomes["read"] += 1
        except ServiceUnavailable:
            outcomes["unavailable"] += 1

    killer = asyncio.create_task(kill_sessions_until_stopped())
    try:
        for _ in range(80):
            readers = [asyncio.create_task(read()) for _ in range(4)]
            await asyncio.sleep(randomness.random() * 0.02)
            for reader in readers[:2]:
                reader.cancel()
            for result in await asyncio.gather(*readers, return_exceptions=True):
                if isinstance(result, asyncio.CancelledError):
                    outcomes["cancelled"] += 1
                elif isinstance(result, BaseException):
                    raise result
    finally:
        stopping.set()
        await killer
        await admin.close()
        await database.dispose()

    assert outcomes["unavailable"] > 0, outcomes
    assert outcomes["cancelled"] > 0, outcomes


KILL_QUERY_SESSIONS = """
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'selftune-events'
"""
LARGE_READ = "SELECT g, repeat('x', 300) FROM generate_series(1, 5000) g"


async def test_a_pool_held_by_others_is_busy_not_unreachable(
    migrated_database_url: str,
) -> None:
    """A reconnect storm can hold every connection: the answer must say the
    service is busy, not send an operator looking for a database that is up."""
    database = Database(
        create_engine(migrated_database_url, pool_size=1, pool_timeout=0.2)
    )
    try:
        async with database.connection():
            with pytest.raises(ServiceBusy) as busy:
                async with database.connection():
                    pass
    finally:
        await database.dispose()

    assert "busy" in busy.value.detail
