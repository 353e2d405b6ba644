"""sse-starlette's EventSourceResponse, bound to a RunStream it always releases.

Departures from the stock response, each deliberate:

1. The stream is closed when the response ends, however it ends (finished,
   client gone, send timeout, shutdown), not when its generator happens to
   be finalised; so subscriptions never outlive their connection.
2. A send timeout ends the stream quietly with a warning rather than an
   ASGI error: the client was too slow or is gone, and it resumes from its
   last id.
3. The stream sends its own heartbeat, the bare comment `: ping`, only
   after HEARTBEAT_SECONDS without an event (stream.py); sse-starlette's
   ping task, which ticks on a fixed clock whatever is sent, is off.
4. Each send is bounded by asyncio's own timeout rather than an anyio cancel
   scope: the same SendTimeoutError, at a fraction of the cost, on a path
   taken for every chunk of every stream (the fan-out profile showed the
   cancel scope among the top costs per delivery).
"""

import asyncio
import logging

from sse_starlette.sse import AppStatus, EventSourceResponse, SendTimeoutError
from starlette.types import Message, Receive, Scope, Send

from app.streaming.sse import format_run_id
from app.streaming.stream import RunStream

logger = logging.getLogger(__name__)


class RunEventsResponse(EventSourceResponse):
    def __init__(
        self,
        stream: RunStream,
        *,
        send_timeout_seconds: float,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            stream.frames(),
            headers=headers,
            # Departure 3.
            ping=0,
            sep="\n",
            send_timeout=send_timeout_seconds,
        )
        self.stream = stream

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        # Departure 4.
        try:
            async with asyncio.timeout(self.send_timeout):
                await send(message)
        except TimeoutError:
            self._send_interrupted = True
            raise SendTimeoutError() from None
        except BaseException:
            self._send_interrupted = True
            raise

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        reason = None
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            # Departure 2.
            reason = "slow_client"
            logger.warning(
                "stream.send_timed_out",
                extra={
                    "run_id": format_run_id(self.stream.run_id),
                    "last_seq": self.stream.last_sent,
                },
            )
        finally:
            if reason is None and AppStatus.should_exit:
                reason = "shutdown"
            # Departure 1.
            self.stream.close(reason)
