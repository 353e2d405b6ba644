"""sse-starlette's EventSourceResponse, lean on the hot path and bound to a RunStream.

The stock response runs four tasks per stream in an anyio task group (the
writer, a ping clock, a shutdown listener, a disconnect listener) and arms a
cancel scope around every send. With thousands of streams those are most of
the cost of a delivery and half the memory of a stream
(docs/PERFORMANCE.md). This subclass keeps the stock headers and
behaviour, and departs in how it gets there:

1. The request's own task writes the chunks. One small task per stream
   waits for `http.disconnect`; the process's StreamSupervisor (one task)
   sends heartbeats, enforces the send timeout and drains on shutdown, each
   by waking or cancelling the writer.
2. The heartbeat is the bare comment `: ping`, sent only after
   HEARTBEAT_SECONDS without a write (SPEC); sse-starlette's fixed-clock
   ping never runs.
3. A send timeout ends the stream quietly with a warning rather than an
   ASGI error: the client was too slow or is gone, and it resumes from its
   last id.
4. The stream is closed when the response ends, however it ends, not when
   its generator happens to be finalised; so subscriptions never outlive
   their connection.
"""

import asyncio
import logging
import time

from sse_starlette.sse import EventSourceResponse
from starlette.types import Message, Receive, Scope, Send

from app.streaming.sse import format_run_id
from app.streaming.stream import RunStream
from app.streaming.supervisor import StreamSupervisor

logger = logging.getLogger(__name__)

# On shutdown each stream gets this long to send the end of its body, so a
# client that stopped reading cannot hold up the drain.
CLOSING_SEND_SECONDS = 1.0

# A send waiting this long when the connection drops marks a slow reader.
STUCK_SEND_SECONDS = 1.0

END_OF_BODY: Message = {"type": "http.response.body", "body": b"", "more_body": False}


class RunEventsResponse(EventSourceResponse):
    def __init__(
        self,
        stream: RunStream,
        *,
        supervisor: StreamSupervisor,
        headers: dict[str, str] | None = None,
    ) -> None:
        # The stock headers and media type. None of the stock response's
        # tasks, its ping or its send timeout run: __call__ is this class's.
        super().__init__(stream.frames(), headers=headers)
        self.stream = stream
        self.supervisor = supervisor

        # Read by the supervisor on every tick.
        self.last_write_at = time.monotonic()
        self.is_sending = False

        self.writer: asyncio.Task[object] | None = None
        self.stop_reason: str | None = None
        self.has_started = False

    def request_heartbeat(self) -> None:
        self.stream.request_heartbeat()

    def flush_metrics(self) -> None:
        self.stream.flush_metrics()

    def stop(self, reason: str) -> None:
        """End the response from outside its task: client gone, slow, shutdown."""
        if self.stop_reason is not None or self.writer is None:
            return
        self.stop_reason = reason
        # The writer is suspended (the caller runs on the same loop), so the
        # cancellation lands at that await: in a send, in the feed's wait, or
        # in a database read, each of which unwinds cleanly.
        self.writer.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.run(receive, send)
        finally:
            # Departure 4.
            self.stream.close(self.stop_reason)

    async def run(self, receive: Receive, send: Send) -> None:
        self.writer = asyncio.current_task()
        watcher = asyncio.create_task(self.watch_for_disconnect(receive))
        self.supervisor.register(self)
        try:
            try:
                await self.write_body(send)
            finally:
                self.supervisor.unregister(self)
                watcher.cancel()
                await self.body_iterator.aclose()  # type: ignore[attr-defined]
        except asyncio.CancelledError:
            assert self.writer is not None
            if self.stop_reason is None or self.writer.uncancel() > 0:
                # Not ours: uvicorn or the loop is cancelling the request.
                raise
            await self.after_stop(send)

    async def write_body(self, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": self.status_code,
                "headers": self.raw_headers,
            }
        )
        self.has_started = True

        async for chunk in self.body_iterator:
            self.last_write_at = time.monotonic()
            self.is_sending = True
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            self.is_sending = False

        await send(END_OF_BODY)

    async def after_stop(self, send: Send) -> None:
        if self.stop_reason == "slow_client":
            # Departure 3. The send never returned: the transport is in an
            # unknown state, so uvicorn closes the connection instead.
            logger.warning(
                "stream.slow_client_dropped",
                extra={
                    "run_id": format_run_id(self.stream.run_id),
                    "last_seq": self.stream.last_sent,
                    "stuck_s": round(time.monotonic() - self.last_write_at, 1),
                },
            )
        elif (
            self.stop_reason == "shutdown" and self.has_started and not self.is_sending
        ):
            # A clean end of the body, so that the client sees the stream end
            # (and resumes elsewhere) rather than a cut connection.
            try:
                async with asyncio.timeout(CLOSING_SEND_SECONDS):
                    await send(END_OF_BODY)
            except (TimeoutError, OSError):
                pass

    def send_was_stuck(self) -> bool:
        """Whether a send has waited long enough to call the reader slow.

        A reader that stopped reading is often cut by the kernel before the
        send deadline (TCP_USER_TIMEOUT covers a zero window too) and shows
        up as a disconnect; a client that just left mid-replay may also
        leave a send briefly waiting, which says nothing about it.
        """
        stuck_for = time.monotonic() - self.last_write_at
        return self.is_sending and stuck_for >= STUCK_SEND_SECONDS

    async def watch_for_disconnect(self, receive: Receive) -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                self.stop("slow_client" if self.send_was_stuck() else "client_gone")
                return
