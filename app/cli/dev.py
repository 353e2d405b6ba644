"""`dev`: the whole service on one machine, with a demo run to watch.

Without DATABASE_URL it starts an embedded PostgreSQL in .selftune/pgdata
(relative to the current folder), so that nothing needs installing first.
"""

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from app.cli.execution import open_database, run_command
from app.cli.server import (
    GRACEFUL_SHUTDOWN_SECONDS,
    bind_listening_socket,
    wait_for_database,
)
from app.config import Settings
from app.db import keys as key_queries
from app.db import orgs as org_queries
from app.db import runs as run_queries
from app.db import tokens as token_queries
from app.db.embedded import start_embedded_postgres
from app.db.engine import Database
from app.db.migrate import upgrade_to_head
from app.errors import AppError, ConfigError
from app.ids import RUN_PREFIX, format_id
from app.keys import generate_key, hash_key, visible_prefix
from app.simulation import simulate_run
from app.tokens import MAX_TTL

logger = logging.getLogger(__name__)

DEV_HOST = "127.0.0.1"
DEV_DATA_DIR = Path(".selftune") / "pgdata"
DEMO_ORG_NAME = "Demo organisation"

# uvicorn offers a `started` flag but no event to await; this is how often
# the demo looks at it.
STARTED_CHECK_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class Demo:
    key: str
    run_id: uuid.UUID
    read_token: str


def dev(
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    speed: Annotated[
        float,
        typer.Option(min=0.01, help="How fast the demo run plays (1 is ~30 s)."),
    ] = 1.0,
) -> None:
    """Serve locally with a demo run, and print a ready `curl` command.

    Uses DATABASE_URL when it is set, an embedded PostgreSQL otherwise.
    Stop it with Ctrl-C.
    """
    # Ctrl-C is how dev is meant to end, not a failure.
    run_command(
        lambda settings: run_dev(settings, port, speed), interrupted_exit_code=0
    )


async def run_dev(settings: Settings, port: int, speed: float) -> None:
    # pgserver narrates every step at INFO, multi-line; its warnings suffice.
    logging.getLogger("pgserver").setLevel(logging.WARNING)

    # Fail on a busy port before spending seconds on a database.
    listening = bind_listening_socket(
        DEV_HOST, port, dead_peer_seconds=settings.send_timeout_seconds
    )
    with contextlib.ExitStack() as stack:
        stack.callback(listening.close)
        stack.enter_context(stop_on_sigterm())
        if settings.database_url is None:
            embedded_url = stack.enter_context(start_embedded_postgres(DEV_DATA_DIR))
            settings = settings.model_copy(update={"database_url": embedded_url})
        else:
            await wait_for_database(
                settings.database_url, settings.database_connect_timeout
            )

        async with open_database(settings, pool_size=2) as database:
            await upgrade_to_head(database.engine)
            demo = await create_demo(database)
            await serve_demo(settings, listening, database, demo, speed)


async def create_demo(database: Database) -> Demo:
    """An organisation with a runtime, a test key for it, and a queued run."""
    key = generate_key(test=True)
    async with database.connection() as conn, conn.transaction():
        org_id = await org_queries.create_org(conn, DEMO_ORG_NAME)
        await key_queries.insert_key(
            conn, org_id, prefix=visible_prefix(key), key_hash=hash_key(key)
        )
        run_id = await run_queries.create_run(conn, org_id)
        read_token, _expires_at = await token_queries.create_read_token(
            conn, run_id=run_id, org_id=org_id, ttl=MAX_TTL
        )
    return Demo(key=key, run_id=run_id, read_token=read_token)


async def serve_demo(
    settings: Settings,
    listening: socket.socket,
    database: Database,
    demo: Demo,
    speed: float,
) -> None:
    # Imported here so that commands which never serve do not load the web stack.
    from app.main import create_app

    config = uvicorn.Config(
        create_app(settings.model_copy(update={"dev_pages": True})),
        host=DEV_HOST,
        port=listening.getsockname()[1],
        log_config=None,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    server = uvicorn.Server(config)
    demo_task = asyncio.create_task(run_demo(server, database, demo, speed))
    try:
        await server.serve(sockets=[listening])
    except SystemExit:
        # uvicorn exits this way when the application fails to start; it has
        # logged why.
        raise ConfigError("the service did not start; the log above says why") from None
    finally:
        demo_task.cancel()
        await asyncio.wait([demo_task])


async def run_demo(
    server: uvicorn.Server, database: Database, demo: Demo, speed: float
) -> None:
    """Once the server is up, print how to watch the run, then play it."""
    while not server.started:
        await asyncio.sleep(STARTED_CHECK_SECONDS)

    host, port = server.config.host, server.config.port
    url = f"http://{host}:{port}/api/v1/improve-runs/"
    url += f"{format_id(RUN_PREFIX, demo.run_id)}/events"
    typer.echo(f"API key: {demo.key}")
    typer.echo(f"curl -N -H 'Authorization: Bearer {demo.key}' {url}")
    run = format_id(RUN_PREFIX, demo.run_id)
    typer.echo(f"Timeline: http://{host}:{port}/dev/runs/{run}#token={demo.read_token}")

    try:
        await simulate_run(database, demo.run_id, speed=speed)
    except AppError as exc:
        # The server is still worth keeping up: the events published so far
        # can be streamed.
        logger.error(
            "simulation.failed",
            extra={"run_id": str(demo.run_id), "detail": exc.detail},
        )


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Let SIGTERM stop dev the way Ctrl-C does, cleanup included.

    By default SIGTERM kills the process outright, which would leave the
    embedded PostgreSQL running. uvicorn takes both signals while it serves
    and raises them again once it has shut down.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        signal.raise_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
