"""Peer `listen-per-client`: every stream opens its own LISTEN connection.

The design people usually write first: a stream connects to PostgreSQL,
LISTENs on the service's channel, and reads its own run's new rows whenever
a notification for that run arrives. It costs one database connection per
stream and one read per notification per stream.
"""

import asyncio
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

APPLICATION_NAME = "bench-listen-per-client"
CHANNEL = "selftune_run_events"


def create_app(dsn: str) -> Starlette:
    async def follow(request: Request) -> Response:
        run_id = uuid.UUID(request.path_params["run"])
        return event_stream(stream_run(dsn, run_id))

    return Starlette(
        routes=[
            Route(EVENTS_PATH, follow),
            Route("/readyz", readyz),
        ]
    )


async def stream_run(dsn: str, run_id: uuid.UUID) -> AsyncIterator[bytes]:
    yield RETRY_FRAME
    conn = await asyncpg.connect(
        dsn, server_settings={"application_name": APPLICATION_NAME}
    )
    wakeup = asyncio.Event()
    prefix = f"{run_id} "

    def on_notification(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload.startswith(prefix):
            wakeup.set()

    try:
        await conn.add_listener(CHANNEL, on_notification)
        last_seq = 0
        while True:
            # Cleared before the read: a notification during it wakes the
            # next round, so nothing committed after the read is missed.
            wakeup.clear()
            rows = await conn.fetch(READ_AFTER, run_id, last_seq, PAGE_SIZE)
            if rows:
                last_seq = rows[-1]["seq"]
                yield b"".join(encode_row(row) for row in rows)
                if is_terminal(rows[-1]):
                    return
            if len(rows) < PAGE_SIZE:
                await wakeup.wait()
    finally:
        await conn.close()


def main() -> None:
    parser = argument_parser("python -m bench.peers.listen_per_client")
    parser.add_argument("--dsn", required=True)
    args = parser.parse_args()
    serve(create_app(args.dsn), args)


if __name__ == "__main__":
    main()
