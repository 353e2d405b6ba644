"""What every peer serves around its stream: the response, readiness, uvicorn."""

import argparse
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
EVENTS_PATH = "/api/v1/improve-runs/{run}/events"


def event_stream(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        body, media_type="text/event-stream", headers=STREAM_HEADERS
    )


async def readyz(_request: Request) -> Response:
    return Response(b"ok")


def argument_parser(prog: str) -> argparse.ArgumentParser:
    """--host and --port, which the bench passes to every peer."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    return parser


def serve(app: Any, args: argparse.Namespace, **options: Any) -> None:
    """uvicorn as the bench runs every peer: quiet, no access log."""
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        **options,
    )
