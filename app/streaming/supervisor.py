"""One task per process does, for every open stream, what a timer per stream would.

A stream needs three clocks: a heartbeat after HEARTBEAT_SECONDS without a
write, a deadline on every send (SEND_TIMEOUT_SECONDS), and the server's
shutdown. Armed per stream, the first two cost a timer for every chunk of
every stream, and all of those timers share one heap in the event loop: the
fan-out profile had them at a quarter of the process's time
(docs/PERFORMANCE.md). Here a stream only notes when it last began a write
and whether that write is still pending; one tick looks at them all.

The price is precision: a heartbeat or a drop comes up to one tick late, and
the tick is a small fraction of both intervals.
"""

import asyncio
import logging
import time
from typing import Protocol

from sse_starlette.sse import EventSourceResponse

logger = logging.getLogger(__name__)

# Short enough that a heartbeat is never more than half a second late, long
# enough that ten thousand streams cost a few milliseconds a tick.
MAX_TICK_SECONDS = 0.5
TICKS_PER_INTERVAL = 8


class Supervised(Protocol):
    """What the supervisor needs of a stream's response."""

    # time.monotonic() when the latest write began.
    last_write_at: float
    # True from the start of a send until it returns.
    is_sending: bool

    def request_heartbeat(self) -> None: ...

    def stop(self, reason: str) -> None: ...

    def flush_metrics(self) -> None: ...


class StreamSupervisor:
    """Heartbeats, send deadlines and shutdown for every stream of the process."""

    def __init__(self, heartbeat_seconds: float, send_timeout_seconds: float) -> None:
        self.heartbeat_seconds = heartbeat_seconds
        self.send_timeout_seconds = send_timeout_seconds
        self.tick_seconds = min(
            MAX_TICK_SECONDS,
            heartbeat_seconds / TICKS_PER_INTERVAL,
            send_timeout_seconds / TICKS_PER_INTERVAL,
        )
        self.streams: set[Supervised] = set()
        self.shutting_down = False
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [
            asyncio.create_task(self.tick_forever(), name="stream-supervisor"),
            asyncio.create_task(self.stop_all_on_exit(), name="stream-shutdown"),
        ]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.stop_all("shutdown")
        self.flush_metrics()

    def register(self, stream: Supervised) -> None:
        self.streams.add(stream)
        if self.shutting_down:
            stream.stop("shutdown")

    def unregister(self, stream: Supervised) -> None:
        self.streams.discard(stream)

    async def tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.tick_seconds)
            try:
                self.check(time.monotonic())
            except Exception:
                # A bug here would silently end heartbeats and deadlines for
                # every stream; keep ticking and say so loudly.
                logger.exception("supervisor.check_failed")

    def check(self, now: float) -> None:
        """Drop streams stuck in a send; wake idle ones for a heartbeat.

        One pass over the streams also moves their counts into the metrics.
        """
        for stream in list(self.streams):
            stream.flush_metrics()
            idle = now - stream.last_write_at
            if stream.is_sending:
                if idle >= self.send_timeout_seconds:
                    stream.stop("slow_client")
            elif idle >= self.heartbeat_seconds:
                stream.request_heartbeat()

    async def stop_all_on_exit(self) -> None:
        # sse-starlette's own watcher of uvicorn's exit flag, awaited once for
        # the process rather than once per stream, as the stock response does.
        await EventSourceResponse._listen_for_exit_signal()
        self.shutting_down = True
        logger.info("supervisor.draining", extra={"streams": len(self.streams)})
        self.stop_all("shutdown")

    def stop_all(self, reason: str) -> None:
        for stream in list(self.streams):
            stream.stop(reason)

    def flush_metrics(self) -> None:
        """Move the streams' counts into the process's metrics."""
        for stream in self.streams:
            stream.flush_metrics()
