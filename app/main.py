"""The application factory and its lifespan. Nothing runs at import."""

import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.api import dev_pages, health, runs, tokens
from app.api.deps import Services
from app.api.errors import install_error_handlers
from app.api.openapi import install_openapi
from app.config import Settings, load_settings
from app.db.engine import Database, create_engine, to_asyncpg_dsn
from app.db.migrate import check_schema_is_current
from app.errors import ServiceUnavailable
from app.logging import configure_logging
from app.streaming.admission import StreamSlots
from app.streaming.feeds import RunFeeds
from app.streaming.listener import Listener
from app.streaming.supervisor import StreamSupervisor

logger = logging.getLogger(__name__)

GC_YOUNG_THRESHOLD = 100_000


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service; the database is reached only when the lifespan starts."""
    settings = settings or load_settings()
    database_url = settings.require_database_url()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(
            database_url,
            pool_size=settings.database_pool_size,
            connect_timeout=max(settings.database_connect_timeout, 1.0),
        )
        database = Database(engine)
        feeds = RunFeeds(database, settings.replay_page_size)
        listener = Listener(
            to_asyncpg_dsn(database_url), feeds, settings.listener_check_seconds
        )
        listener.start()
        slots = StreamSlots(settings.max_streams_per_org)
        supervisor = StreamSupervisor(
            settings.heartbeat_seconds, settings.send_timeout_seconds
        )
        supervisor.start()
        services = Services(settings, database, feeds, listener, slots, supervisor)
        app.state.services = services

        try:
            async with database.connection() as conn:
                await check_schema_is_current(conn)
            if not await listener.wait_connected(settings.database_connect_timeout):
                timeout = settings.database_connect_timeout
                raise ServiceUnavailable(
                    "could not listen on the database within "
                    f"DATABASE_CONNECT_TIMEOUT ({timeout:g} s)"
                )
            logger.info(
                "service.started", extra={"pool_size": settings.database_pool_size}
            )
            yield
        finally:
            services.shutting_down = True
            await supervisor.close()
            await listener.stop()
            await feeds.close()
            await database.dispose()
            logger.info("service.stopped")

    app = FastAPI(
        title="selftune-events",
        summary="Live, resumable events of Cloud Improve runs.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    install_openapi(app)
    if settings.allowed_origin_list:
        # Browsers send Authorization and Last-Event-ID only after a
        # preflight that allows them; the run-state headers must be exposed
        # to be readable from script.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_origin_list,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Last-Event-ID", "Content-Type"],
            expose_headers=["X-Run-Status", "X-Run-Last-Event-Id", "Retry-After"],
            max_age=600,
        )
    app.include_router(runs.router)
    app.include_router(tokens.router)
    app.include_router(health.router)
    if settings.dev_pages:
        app.include_router(dev_pages.router)
    return app


def create_app_from_environment() -> FastAPI:
    """The factory `serve` hands to uvicorn, once in each worker process."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    # Thousands of long-lived streams make CPython's default thresholds run
    # full collections of 90-280 ms every few seconds that free nothing; they
    # were the service's p99 in the benchmark (docs/PERFORMANCE.md, finding 1).
    gc.set_threshold(GC_YOUNG_THRESHOLD, 50, 1000)
    return create_app(settings)
