"""An async Python client for a run's event stream: typed events, resumed after drops.

Departures from a browser `EventSource`, each deliberate:

1. 400, 401, 403, 404 and 410 end the iteration at once with a typed error;
   429 and 503 that carry `Retry-After` are retried after it, up to
   `max_retries` times, then raised. (`EventSource` gives up on any non-200.)
2. The server's `retry:` is capped at `max_retry_delay_seconds`, and
   `retry_delay_seconds` replaces it altogether.
3. A first connection that cannot be made fails at once; only a stream that
   was open is resumed, so a wrong URL is reported instead of retried.
4. A connection silent for longer than `read_timeout_seconds` (four of the
   server's default heartbeats) counts as dropped and is resumed.

https://html.spec.whatwg.org/multipage/server-sent-events.html#sse-processing-model
"""

import asyncio
import contextlib
import json
import urllib.parse
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import httpx
from httpx_sse import EventSource

JsonObject = dict[str, Any]

TERMINAL_TYPES = frozenset({"run_completed", "run_failed", "run_cancelled"})

# The SSE spec leaves the first reconnection delay to the client; 3 s is what
# browsers use and what the server announces by default.
DEFAULT_RETRY_DELAY_SECONDS = 3.0
# A larger `retry:` is a misconfigured server; nobody watching a run waits longer.
MAX_RETRY_DELAY_SECONDS = 30.0
# Four of the server's default 15 s heartbeats: a connection this quiet is dead.
READ_TIMEOUT_SECONDS = 60.0
CONNECT_TIMEOUT_SECONDS = 10.0
# Consecutive failed attempts to reopen a stream before giving up.
MAX_RETRIES = 10


class RunEventsError(Exception):
    """Base of every error this client raises."""


class ConnectionFailedError(RunEventsError):
    """The service could not be reached, or a dropped stream could not be resumed.

    `__cause__` holds the last httpx error.
    """


class ProtocolError(RunEventsError):
    """The server answered with something that is not this API's event stream."""


class ResponseError(RunEventsError):
    """The server refused the request with an error status.

    `detail` and `code` come from its JSON body (`code` is None when the body
    has none, as from a proxy); `retry_after` is its `Retry-After` in seconds.
    """

    def __init__(
        self,
        status_code: int,
        detail: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status_code} {code or 'error'}: {detail}")
        self.status_code = status_code
        self.detail = detail
        self.code = code
        self.retry_after = retry_after


class BadRequestError(ResponseError):
    """400: the request itself must be corrected."""


class InvalidCursorError(BadRequestError):
    """400 `invalid_cursor`: the cursor is not an event of this run; follow
    again with none."""


class AuthenticationError(ResponseError):
    """401: the API key is missing, unknown or revoked."""


class PermissionDeniedError(ResponseError):
    """403: the run belongs to another organisation."""


class RunNotFoundError(ResponseError):
    """404: no run has this id."""


class RunPrunedError(ResponseError):
    """410: the run's events are no longer kept."""


class TooManyStreamsError(ResponseError):
    """429: the organisation holds as many open streams as the server allows."""


class ServiceUnavailableError(ResponseError):
    """503: no Cloud Improve runtime for the organisation, or no database."""


ERRORS_BY_STATUS: dict[int, type[ResponseError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: RunNotFoundError,
    410: RunPrunedError,
    429: TooManyStreamsError,
    503: ServiceUnavailableError,
}

# Refusals retried when they carry Retry-After (departure 1).
RETRIED_ERRORS = (TooManyStreamsError, ServiceUnavailableError)


class ClosedOnExit:
    """`async with` support for a class with `aclose()`."""

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


@dataclass(frozen=True, slots=True)
class RunEvent:
    """One event of a run, as the stream's `data:` line describes it.

    `raw` is that line as the server sent it: payload numbers keep their
    exact digits there, whatever a round trip through Python would do.
    """

    id: str
    run_id: str
    org_id: str
    type: str
    created_at: datetime
    status: str | None = None
    phase: str | None = None
    candidate_id: str | None = None
    proposal_id: str | None = None
    payload: JsonObject | None = None
    raw: str = field(default="", repr=False, compare=False)

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    @classmethod
    def from_json(cls, text: str) -> Self:
        """Parse one `data:` line; ProtocolError if it is not an event object."""
        try:
            body = json.loads(text)
            payload = body.get("payload")
            if payload is not None and not isinstance(payload, dict):
                raise TypeError("payload is not an object")
            return cls(
                id=read_text(body, "id"),
                run_id=read_text(body, "run_id"),
                org_id=read_text(body, "org_id"),
                type=read_text(body, "type"),
                created_at=datetime.fromisoformat(read_text(body, "created_at")),
                status=read_optional_text(body, "status"),
                phase=read_optional_text(body, "phase"),
                candidate_id=read_optional_text(body, "candidate_id"),
                proposal_id=read_optional_text(body, "proposal_id"),
                payload=payload,
                raw=text,
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"not an event: {exc}") from exc


def read_text(body: JsonObject, name: str) -> str:
    value = body[name]
    if not isinstance(value, str):
        raise TypeError(f"{name} is not a string")
    return value


def read_optional_text(body: JsonObject, name: str) -> str | None:
    return read_text(body, name) if name in body else None


class RunEventsClient(ClosedOnExit):
    """Follows the event streams of runs on one selftune-events service.

    Use it as an async context manager: it holds one httpx connection pool,
    closed on exit.

    Args:
        base_url: the service's root, such as `http://127.0.0.1:8000`.
        api_key: the organisation's API key, sent as a bearer token.
        retry_delay_seconds: wait this long before each reconnect, instead of
            the server's `retry:` (departure 2).
        max_retry_delay_seconds: the longest wait before a reconnect.
        max_retries: failed attempts in a row before giving up; None never does.
        read_timeout_seconds: silence after which a connection counts as dropped.
        transport: an httpx transport to use instead of the network.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        retry_delay_seconds: float | None = None,
        max_retry_delay_seconds: float = MAX_RETRY_DELAY_SECONDS,
        max_retries: int | None = MAX_RETRIES,
        read_timeout_seconds: float = READ_TIMEOUT_SECONDS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retry_delay_seconds = retry_delay_seconds
        self.max_retry_delay_seconds = max_retry_delay_seconds
        self.max_retries = max_retries
        self.http = httpx.AsyncClient(
            base_url=base_url,
            headers={
                "Authorization": f"Bearer {api_key}",
                "Accept": "text/event-stream",
                "Cache-Control": "no-store",
            },
            timeout=httpx.Timeout(CONNECT_TIMEOUT_SECONDS, read=read_timeout_seconds),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    def follow(
        self, run_id: str | uuid.UUID, *, after: str | None = None
    ) -> "RunEventIterator":
        """Iterate over a run's events, strictly after the event `after` if given.

        The iteration ends after the run's terminal event, or at once when
        `after` is that event.
        """
        return RunEventIterator(self, str(run_id), after)

    async def open_stream(
        self, run_id: str, cursor: str | None
    ) -> httpx.Response | None:
        """One GET of the events route: the open 200 response, or None for a 204.

        The caller closes the response.

        Raises:
            ResponseError: any other status, as the subclass for it.
            ProtocolError: a 200 that is not an event stream.
            httpx.TransportError: the request failed.
        """
        path = f"/api/v1/improve-runs/{urllib.parse.quote(run_id, safe='')}/events"
        headers = {"Last-Event-ID": cursor} if cursor else {}
        request = self.http.build_request("GET", path, headers=headers)
        response = await self.http.send(request, stream=True)
        content_type = response.headers.get("content-type", "")
        if response.status_code == 200 and content_type.startswith("text/event-stream"):
            return response

        try:
            if response.status_code == 204:
                return None
            if response.status_code == 200:
                raise ProtocolError(f"expected an event stream, got {content_type!r}")
            await response.aread()
            raise read_response_error(response)
        finally:
            await response.aclose()


class RunEventIterator(ClosedOnExit):
    """The events of one run, in order and each once, across reconnects.

    Leaving the loop early leaves a connection open until the iterator is
    garbage-collected: use it as `async with client.follow(run) as events:`
    or call `aclose()` to close it at once.
    """

    def __init__(self, client: RunEventsClient, run_id: str, after: str | None) -> None:
        # The generator's frame holds the follower, never this object: with no
        # reference cycle, a dropped iterator is finalised outermost first, so
        # its nested generators are closed in order instead of all at once.
        self.follower = RunFollower(client, run_id, after)
        self.events = self.follower.read_until_end()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> RunEvent:
        return await anext(self.events)

    async def aclose(self) -> None:
        """Close the open stream, if any; iterating afterwards ends at once."""
        await self.events.aclose()

    @property
    def last_event_id(self) -> str | None:
        """The last event yielded, sent as `Last-Event-ID` on resume."""
        return self.follower.last_event_id

    @property
    def reconnects(self) -> int:
        """How many times the stream has been opened again, or tried to be."""
        return self.follower.reconnects

    @property
    def server_retry_ms(self) -> int | None:
        """The stream's last `retry:` field, if it sent one."""
        return self.follower.server_retry_ms

    @property
    def retry_delay_seconds(self) -> float:
        return self.follower.retry_delay_seconds


class RunFollower:
    """Where one run's stream stands, and the loop that reopens it."""

    def __init__(self, client: RunEventsClient, run_id: str, after: str | None) -> None:
        self.client = client
        self.run_id = run_id
        self.last_event_id = after
        self.reconnects = 0
        self.server_retry_ms: int | None = None

    @property
    def retry_delay_seconds(self) -> float:
        """How long the next reconnect waits: the override, else `retry:`, capped."""
        if self.client.retry_delay_seconds is not None:
            return self.client.retry_delay_seconds
        delay = DEFAULT_RETRY_DELAY_SECONDS
        if self.server_retry_ms is not None:
            delay = self.server_retry_ms / 1000
        return min(delay, self.client.max_retry_delay_seconds)

    async def read_until_end(self) -> AsyncGenerator[RunEvent]:
        failures = 0
        has_connected = False
        while True:
            try:
                response = await self.client.open_stream(
                    self.run_id, self.last_event_id
                )
                if response is None:
                    return
                failures, has_connected = 0, True
                async with contextlib.aclosing(self.read(response)) as events:
                    async for event in events:
                        self.last_event_id = event.id
                        yield event
                        if event.is_terminal:
                            return
                # Ended without the terminal event (a server shutting down,
                # a slow-client drop): resume like EventSource does.
                delay = self.retry_delay_seconds
            except (httpx.TransportError, *RETRIED_ERRORS) as exc:
                failures += 1
                delay = self.delay_after_failure(exc, failures, has_connected)

            await asyncio.sleep(delay)
            self.reconnects += 1

    def delay_after_failure(
        self, exc: Exception, failures: int, has_connected: bool
    ) -> float:
        """The wait before retrying after `exc`, or raise it if it is final."""
        is_over_budget = (
            self.client.max_retries is not None and failures > self.client.max_retries
        )
        if isinstance(exc, ResponseError):
            # Departure 1: only a server that says when to come back is retried.
            if exc.retry_after is None or is_over_budget:
                raise exc
            return min(exc.retry_after, self.client.max_retry_delay_seconds)

        if not has_connected or is_over_budget:
            # Departure 3.
            reason = str(exc) or type(exc).__name__
            raise ConnectionFailedError(
                f"cannot reach {self.client.http.base_url}: {reason}"
            ) from exc
        return self.retry_delay_seconds

    async def read(self, response: httpx.Response) -> AsyncGenerator[RunEvent]:
        """The events of one response; closes it however the reading ends."""
        messages = EventSource(response).aiter_sse()
        try:
            async for message in messages:
                if message.retry is not None:
                    self.server_retry_ms = message.retry
                # A message with no data is not dispatched (the SSE spec), and
                # `retry:` arrives alone.
                if message.data:
                    yield RunEvent.from_json(message.data)
        finally:
            await messages.aclose()
            await response.aclose()


def read_response_error(response: httpx.Response) -> ResponseError:
    """The typed error for a refused request, with the body's detail and code."""
    detail = " ".join(response.text.split())[:200] or response.reason_phrase
    code = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        detail = body["detail"]
        code = body["code"] if isinstance(body.get("code"), str) else None

    error_class = ERRORS_BY_STATUS.get(response.status_code, ResponseError)
    if code == "invalid_cursor":
        error_class = InvalidCursorError
    return error_class(
        response.status_code,
        detail,
        code=code,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds; the HTTP-date form counts as absent."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())
