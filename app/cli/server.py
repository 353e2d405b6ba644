"""`migrate` and `serve`, and what both need first: a database that answers."""

import asyncio
import logging
import os
import socket
import tempfile
from typing import Annotated

import asyncpg
import typer
import uvicorn
from sqlalchemy.exc import DBAPIError
from uvicorn.supervisors import Multiprocess

from app.cli.execution import connect, run_command
from app.config import Settings
from app.db.engine import QUERY_APPLICATION_NAME, create_engine, to_asyncpg_dsn
from app.db.migrate import check_schema_is_current, upgrade_to_head
from app.errors import ConfigError, ServiceUnavailable

logger = logging.getLogger(__name__)

# uvicorn waits this long for open responses before it cancels them. The
# service ends its streams as soon as shutdown starts, so this only has to
# outlast that drain, and stays inside the usual 30 s container grace period.
GRACEFUL_SHUTDOWN_SECONDS = 10

# How long uvicorn's supervisor waits for a worker to answer before it kills
# and replaces it. Its default of 5 s is shorter than importing the web stack
# on a busy two-core host, which made workers restart in a loop.
WORKER_HEALTHCHECK_SECONDS = 30

# Retry quickly at first (a database that is just starting), then settle.
FIRST_RETRY_SECONDS = 0.25
MAX_RETRY_SECONDS = 2.0
MAX_ATTEMPT_SECONDS = 10.0

# Failures that a database still starting up, restarting or briefly full
# gives; anything else (a wrong password, a missing database) will not go
# away by waiting.
RETRYABLE = (
    OSError,
    TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.PostgresConnectionError,
    asyncpg.TooManyConnectionsError,
)


def migrate() -> None:
    """Bring the database schema to the latest version."""
    run_command(run_migrations)


def serve(
    host: Annotated[str, typer.Option(help="The address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Run the HTTP service until SIGINT or SIGTERM."""
    listening = run_command(lambda settings: prepare_to_serve(settings, host, port))
    if workers > 1:
        share_metrics_between_workers()

    # The factory reads the environment again in each worker process.
    config = uvicorn.Config(
        "app.main:create_app_from_environment",
        factory=True,
        workers=workers,
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
        log_config=None,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    # Our socket object, not its fd: uvicorn closes the sockets it is handed
    # as soon as shutdown starts, so a client arriving during the drain is
    # refused and goes to another instance. (With several workers the
    # supervisor keeps its copy open to respawn workers, so the port refuses
    # only once the supervisor exits.)
    if workers > 1:
        Multiprocess(config, sockets=[listening]).run()
    else:
        uvicorn.Server(config).run(sockets=[listening])


def share_metrics_between_workers() -> None:
    """Give the workers a fresh folder to write their Prometheus samples in.

    prometheus-client reads the variable when a worker imports it; /metrics
    in any worker then merges them all (app/metrics.py).
    """
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(
            prefix="selftune-metrics-"
        )


async def run_migrations(settings: Settings) -> None:
    database_url = settings.require_database_url()
    await wait_for_database(database_url, settings.database_connect_timeout)

    engine = create_engine(database_url, pool_size=1)
    try:
        logger.info("migrate.started")
        await upgrade_to_head(engine)
        async with engine.connect() as connection:
            revision = await connection.exec_driver_sql(
                "SELECT version_num FROM alembic_version"
            )
            logger.info("migrate.finished", extra={"revision": revision.scalar()})
    except DBAPIError as exc:
        raise ConfigError(f"the migration failed: {exc.orig}") from exc
    finally:
        await engine.dispose()


async def prepare_to_serve(settings: Settings, host: str, port: int) -> socket.socket:
    """Check the settings, take the port, and wait for the database."""
    database_url = settings.require_database_url()
    listening = bind_listening_socket(
        host, port, dead_peer_seconds=settings.send_timeout_seconds
    )
    await wait_for_database(database_url, settings.database_connect_timeout)
    async with connect(settings) as conn:
        await check_schema_is_current(conn)
    logger.info("serve.listening", extra={"host": host, "port": port})
    return listening


async def wait_for_database(database_url: str, timeout_seconds: float) -> None:
    """Return once the database accepts a connection, retrying for `timeout_seconds`.

    Raises:
        ServiceUnavailable: the database did not answer in time.
        ConfigError: it answered with a refusal that waiting will not change.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    delay = FIRST_RETRY_SECONDS
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - loop.time()
        try:
            conn = await asyncpg.connect(
                to_asyncpg_dsn(database_url),
                timeout=min(max(remaining, 1.0), MAX_ATTEMPT_SECONDS),
                server_settings={"application_name": QUERY_APPLICATION_NAME},
            )
        except RETRYABLE as exc:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ServiceUnavailable(
                    f"the database did not answer within {timeout_seconds:g} s "
                    f"({describe(exc)}); check DATABASE_URL and that PostgreSQL "
                    "is running, or raise DATABASE_CONNECT_TIMEOUT"
                ) from exc
            logger.warning(
                "database.unreachable",
                extra={"attempt": attempt, "error": type(exc).__name__},
            )
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, MAX_RETRY_SECONDS)
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ConfigError(
                f"the database refused the connection: {describe(exc)}"
            ) from exc
        else:
            await conn.close()
            return


def describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def bind_listening_socket(
    host: str, port: int, *, dead_peer_seconds: float | None = None
) -> socket.socket:
    """A socket bound to `host:port`, ready to hand to uvicorn.

    With `dead_peer_seconds`, every accepted connection inherits options that
    drop a client which vanished without closing: a heartbeat that stays
    unacknowledged that long ends the connection (TCP_USER_TIMEOUT), and idle
    connections are probed (keepalive). Without them a silent peer holds its
    stream for the kernel's retransmission limit, about fifteen minutes.
    """
    # The options uvicorn binds with, so that a port left in TIME_WAIT by a
    # previous run counts as free, as it is for uvicorn.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if dead_peer_seconds is not None:
        set_dead_peer_options(listening, dead_peer_seconds)
    listening.set_inheritable(True)
    try:
        listening.bind((host, port))
    except OSError as exc:
        listening.close()
        raise ConfigError(describe_bind_failure(host, port, exc)) from exc
    return listening


KERNEL_TIMEOUT_FACTOR = 1.5


def set_dead_peer_options(listening: socket.socket, seconds: float) -> None:
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    # Linux names; elsewhere the keepalive defaults apply. The kernel limit
    # is half as long again as the send timeout, so that a client which is
    # alive but not reading meets the service's own timeout first and ends
    # as a slow client, and only a vanished one is cut by the kernel.
    linux_options = {
        "TCP_USER_TIMEOUT": int(seconds * KERNEL_TIMEOUT_FACTOR * 1000),
        "TCP_KEEPIDLE": max(int(seconds), 1),
        "TCP_KEEPINTVL": max(int(seconds / 3), 1),
        "TCP_KEEPCNT": 3,
    }
    for name, value in linux_options.items():
        if hasattr(socket, name):
            listening.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def describe_bind_failure(host: str, port: int, exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return f"cannot listen on {host}:{port} ({reason}); choose another --port"
