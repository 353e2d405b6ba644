"""Watching PostgreSQL sessions from outside: who waits for whose lock.

Tests that need one session to be stuck behind another confirm it here,
from a third session, instead of sleeping and hoping.
"""

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg

Connect = Callable[[], Awaitable[asyncpg.Connection]]

# Long enough for a loaded CI machine to reach the lock wait; a test that
# gets here without it has found a bug, not a slow machine.
LOCK_WAIT_DEADLINE_SECONDS = 10.0

# Between two looks at pg_locks; each look is one cheap query.
POLL_INTERVAL_SECONDS = 0.01


async def poll_until(
    check: Callable[[], Awaitable[bool]],
    what: str,
    *,
    deadline_seconds: float = LOCK_WAIT_DEADLINE_SECONDS,
) -> None:
    """Return once `check()` is true; fail, naming `what`, at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_seconds
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not seen within {deadline_seconds} s")
        await asyncio.sleep(POLL_INTERVAL_SECONDS)


async def wait_until_blocked(
    observer: asyncpg.Connection, pid: int, *, by: int
) -> None:
    """Return once backend `pid` waits for a lock that backend `by` holds.

    https://www.postgresql.org/docs/current/functions-info.html (pg_blocking_pids)
    """

    async def is_blocked() -> bool:
        blockers = await observer.fetchval("SELECT pg_blocking_pids($1)", pid)
        return by in blockers

    await poll_until(is_blocked, f"backend {pid} waiting for backend {by}")


async def wait_for_advisory_waiters(
    observer: asyncpg.Connection,
    database: str,
    count: int,
    *,
    deadline_seconds: float = LOCK_WAIT_DEADLINE_SECONDS,
) -> None:
    """Return once `count` sessions of `database` wait for an advisory lock."""

    async def are_waiting() -> bool:
        waiting = await observer.fetchval(
            """
            SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
            WHERE d.datname = $1 AND l.locktype = 'advisory' AND NOT l.granted
            """,
            database,
        )
        return bool(waiting == count)

    await poll_until(
        are_waiting,
        f"{count} advisory lock waiters in {database}",
        deadline_seconds=deadline_seconds,
    )
