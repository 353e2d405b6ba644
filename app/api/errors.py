"""AppError -> JSON response, in one table."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import metrics
from app.errors import (
    AppError,
    InvalidCursor,
    InvalidRequest,
    NotAuthenticated,
    RunForbidden,
    RunNotFound,
    RunPruned,
    RuntimeUnavailable,
    ServiceBusy,
    ServiceUnavailable,
    TooManyStreams,
)

logger = logging.getLogger(__name__)

# error class -> (status, machine-readable code)
ERROR_RESPONSES: dict[type[AppError], tuple[int, str]] = {
    NotAuthenticated: (401, "not_authenticated"),
    RuntimeUnavailable: (503, "runtime_unavailable"),
    RunNotFound: (404, "run_not_found"),
    RunForbidden: (403, "run_forbidden"),
    InvalidCursor: (400, "invalid_cursor"),
    InvalidRequest: (400, "invalid_request"),
    RunPruned: (410, "run_pruned"),
    TooManyStreams: (429, "too_many_streams"),
    ServiceUnavailable: (503, "database_unavailable"),
    ServiceBusy: (503, "database_busy"),
}

RUNS_PREFIX = "/api/v1/improve-runs/"
HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}

# Seconds a client should wait before retrying a 503 for a lost database,
# or a 429 while its organisation's streams are all in use.
DATABASE_RETRY_AFTER_SECONDS = 3
STREAM_LIMIT_RETRY_AFTER_SECONDS = 10


def render_error(exc: AppError) -> JSONResponse:
    status, code = ERROR_RESPONSES.get(type(exc), (500, "internal_error"))
    metrics.REQUESTS_REJECTED.labels(str(status)).inc()
    headers = {}
    if isinstance(exc, NotAuthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, ServiceUnavailable):
        headers["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    if isinstance(exc, TooManyStreams):
        headers["Retry-After"] = str(STREAM_LIMIT_RETRY_AFTER_SECONDS)
    return JSONResponse(
        {"detail": exc.detail, "code": code}, status_code=status, headers=headers
    )


async def handle_app_error(_request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, AppError):  # pragma: no cover - registered for AppError
        raise exc
    return render_error(exc)


async def handle_http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (no route, wrong method) in the same JSON shape.

    A path under the runs prefix that no route matches, such as an id with an
    encoded slash, is an unknown run as far as the caller can tell.
    """
    if not isinstance(exc, StarletteHTTPException):  # pragma: no cover
        raise exc
    if exc.status_code == 404 and request.url.path.startswith(RUNS_PREFIX):
        return render_error(RunNotFound("no improve run with this id"))
    code = HTTP_ERROR_CODES.get(exc.status_code, "http_error")
    metrics.REQUESTS_REJECTED.labels(str(exc.status_code)).inc()
    return JSONResponse(
        {"detail": str(exc.detail), "code": code},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def handle_invalid_request(_request: Request, exc: Exception) -> JSONResponse:
    """A request body that does not validate, in the same shape as every error."""
    if not isinstance(exc, RequestValidationError):  # pragma: no cover
        raise exc
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
        for error in exc.errors()
    )
    metrics.REQUESTS_REJECTED.labels("422").inc()
    return JSONResponse(
        {"detail": problems, "code": "invalid_request"}, status_code=422
    )


async def handle_unexpected(_request: Request, exc: Exception) -> JSONResponse:
    # The top of a request: anything not mapped above is a bug of ours; log
    # it with its traceback and answer in the same JSON shape, never a page.
    logger.exception("request.failed", extra={"error": type(exc).__name__})
    metrics.REQUESTS_REJECTED.labels("500").inc()
    return JSONResponse(
        {"detail": "internal error; it has been logged", "code": "internal_error"},
        status_code=500,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, handle_app_error)
    app.add_exception_handler(RequestValidationError, handle_invalid_request)
    app.add_exception_handler(Exception, handle_unexpected)
    app.add_exception_handler(StarletteHTTPException, handle_http_error)
