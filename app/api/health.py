"""Liveness, readiness and metrics, for operators; none needs a key."""

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from sse_starlette.sse import AppStatus

from app.api.deps import ServicesDep
from app.errors import ServiceUnavailable
from app.metrics import render_metrics

router = APIRouter()

# Orchestrators probe every few seconds and give up on a slow answer; a
# database that takes longer than this to say SELECT 1 counts as down.
DATABASE_CHECK_SECONDS = 2.0


@router.get("/healthz", include_in_schema=False)
async def healthz() -> JSONResponse:
    """The process is up and serving HTTP."""
    return JSONResponse({"status": "ok"})


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(services: ServicesDep) -> Response:
    """Prometheus exposition of every worker's metrics."""
    # This process's streams count their events and hand them over once a
    # tick; a scrape should not lag behind its own process.
    services.supervisor.flush_metrics()
    body, content_type = render_metrics()
    return Response(body, media_type=content_type)


@router.get("/readyz", include_in_schema=False)
async def readyz(services: ServicesDep) -> JSONResponse:
    """Ready to stream: database reachable, listener connected, not shutting down."""
    problems = []
    if AppStatus.should_exit or services.shutting_down:
        problems.append("shutting down")
    if not services.listener.is_connected:
        problems.append("listener not connected")
    try:
        async with asyncio.timeout(DATABASE_CHECK_SECONDS):
            async with services.database.connection() as conn:
                await conn.fetchval("SELECT 1")
    except (ServiceUnavailable, TimeoutError):
        problems.append("database unreachable")

    if problems:
        return JSONResponse({"status": "unavailable", "problems": problems}, 503)
    return JSONResponse({"status": "ok"})
