"""Peer `polling`: every stream polls the table once a second through a pool.

The other common first design: no LISTEN at all. Latency is half the interval
on average, and the database answers one query per stream per interval
whether anything happened or not.
"""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.peers.frames import (
    PAGE_SIZE,
    READ_AFTER,
    RETRY_FRAME,
    encode_row,
    is_terminal,
)
from bench.peers.http import (
    EVENTS_PATH,
    argument_parser,
    event_stream,
    readyz,
    serve,
)

APPLICATION_NAME = "bench-polling"


def create_app(dsn: str, interval_seconds: float, pool_size: int) -> Starlette:
    pools: list[Any] = []

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=pool_size,
            max_size=pool_size,
            server_settings={"application_name": APPLICATION_NAME},
        )
        pools.append(pool)
        yield
        await pool.close()

    async def follow(request: Request) -> Response:
        run_id = uuid.UUID(request.path_params["run"])
        return event_stream(poll_run(pools[0], run_id, interval_seconds))

    return Starlette(
        routes=[
            Route(EVENTS_PATH, follow),
            Route("/readyz", readyz),
        ],
        lifespan=lifespan,
    )


async def poll_run(
    pool: Any, run_id: uuid.UUID, interval_seconds: float
) -> AsyncIterator[bytes]:
    yield RETRY_FRAME
    last_seq = 0
    while True:
        async with pool.acquire() as conn:
            rows = await conn.fetch(READ_AFTER, run_id, last_seq, PAGE_SIZE)
        if rows:
            last_seq = rows[-1]["seq"]
            yield b"".join(encode_row(row) for row in rows)
            if is_terminal(rows[-1]):
                return
        if len(rows) < PAGE_SIZE:
            await asyncio.sleep(interval_seconds)


def main() -> None:
    parser = argument_parser("python -m bench.peers.polling")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--pool-size", type=int, default=10)
    args = parser.parse_args()
    serve(create_app(args.dsn, args.interval, args.pool_size), args)


if __name__ == "__main__":
    main()
