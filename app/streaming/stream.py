"""One client's stream: replay from the cursor, hand over to the live feed, end.

The stream's position is `last_sent`, the sequence of the last event written
to this client. Every step only ever writes the event `last_sent + 1`, which
is what makes the stream exactly-once whatever the feed delivers: events at
or below the position are skipped, and a jump past it (lost notifications,
an overflowed buffer) is filled from the database. docs/ARCHITECTURE.md tells
the hand-over in full.
"""

import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

from app import metrics
from app.db import events as event_queries
from app.db.engine import Database
from app.errors import ServiceUnavailable
from app.streaming.feeds import RunFeeds, Subscription
from app.streaming.sse import (
    PING_FRAME,
    EncodedEvent,
    encode_event,
    encode_retry,
    format_org_id,
    format_run_id,
)

logger = logging.getLogger(__name__)


# Frames are joined into sends of about this size: several per send keeps the
# per-event cost low, and a bound keeps what one slow socket can park in the
# server's transport buffer small. A single larger frame goes alone.
MAX_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class StreamOptions:
    retry_ms: int
    replay_page_size: int
    max_buffered_events: int


def group_frames(frames: list[bytes]) -> Iterator[bytes]:
    """Join frames, in order, into chunks of at most MAX_CHUNK_BYTES."""
    group: list[bytes] = []
    size = 0
    for frame in frames:
        if group and size + len(frame) > MAX_CHUNK_BYTES:
            yield b"".join(group)
            group, size = [], 0
        group.append(frame)
        size += len(frame)
    if group:
        yield b"".join(group)


class RunStream:
    """The frames of one run for one client, strictly after `after_seq`.

    `frames()` is the body iterator. It may be abandoned at any await (client
    gone, send timeout, shutdown); whoever drives it calls `close()` after,
    which releases the subscription and logs the stream's summary once.
    """

    def __init__(
        self,
        *,
        run_id: uuid.UUID,
        org_id: uuid.UUID,
        after_seq: int,
        database: Database,
        feeds: RunFeeds,
        options: StreamOptions,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.run_id = run_id
        self.org_id = org_id
        self.cursor_seq = after_seq
        self.last_sent = after_seq
        self.database = database
        self.feeds = feeds
        self.options = options
        self.on_close = on_close

        self.subscription: Subscription | None = None
        self.has_ended = False
        self.events_sent = 0
        # Counted here and moved into the metrics once a tick
        # (flush_metrics): a metric update per chunk per stream costs a
        # lock on the hottest path of the process.
        self.live_sent_unflushed = 0
        self.replay_sent_unflushed = 0
        self.close_reason = "client_gone"
        self.opened_at = time.monotonic()
        self.closed = False

    async def frames(self) -> AsyncIterator[bytes]:
        """Yield the stream's bytes: `retry:`, the replay, then live events."""
        yield encode_retry(self.options.retry_ms)

        # Subscribe before the first read: any event committed from here on
        # reaches the buffer, and the replay reads all committed before.
        subscription = self.subscription = self.feeds.subscribe(
            self.run_id, self.options.max_buffered_events
        )
        metrics.STREAMS_OPEN.inc()
        metrics.STREAMS_OPENED.inc()
        logger.info(
            "stream.opened",
            extra={
                "run_id": format_run_id(self.run_id),
                "org_id": format_org_id(self.org_id),
                "cursor_seq": self.cursor_seq,
            },
        )
        try:
            async for chunk in self.read_database():
                yield chunk
            if self.has_ended:
                return

            subscription.live_position = self.last_sent
            # Whatever the replay wrote counts as activity: a heartbeat
            # asked for meanwhile is not due.
            subscription.heartbeat_due = False
            while True:
                # The live path is one await per wake-up and one generator
                # level per chunk: it runs for every event on every stream.
                chunks, must_catch_up = await self.next_live_chunks(subscription)
                for chunk in chunks:
                    yield chunk
                if must_catch_up and not self.has_ended:
                    async for chunk in self.read_database():
                        yield chunk
                if self.has_ended:
                    return
                subscription.live_position = self.last_sent
        except ServiceUnavailable:
            # Ending is the honest answer: the client resumes from its last
            # id once the database is back, and nothing is skipped.
            self.close_reason = "database_unavailable"

    async def next_live_chunks(
        self, subscription: Subscription
    ) -> tuple[list[bytes], bool]:
        """Wait for the feed; the chunks to send, and whether to read the database.

        No timer here: the supervisor wakes an idle stream for its heartbeat
        (supervisor.py).
        """
        await subscription.wakeup.wait()

        if subscription.overflowed:
            # This client fell behind the feed: its buffer was dropped, and
            # the database has everything it missed.
            subscription.overflowed = False
            subscription.take()
            return [], True

        if subscription.pending:
            frames, has_gap = self.take_in_order(subscription.take())
            return list(group_frames(frames)), has_gap

        # Woken for the heartbeat alone: SPEC's comment while no event is
        # due (unless the replay's writes made it moot).
        heartbeat_due = subscription.heartbeat_due
        subscription.take()
        return ([PING_FRAME] if heartbeat_due else []), False

    def take_in_order(self, events: list[EncodedEvent]) -> tuple[list[bytes], bool]:
        """The frames that continue the stream, and whether one was missing."""
        frames: list[bytes] = []
        has_gap = False
        for event in events:
            if event.seq <= self.last_sent:
                continue
            if event.seq > self.last_sent + 1:
                has_gap = True
                break
            frames.append(event.frame)
            self.mark_sent(event)
            if event.is_terminal:
                break
        self.live_sent_unflushed += len(frames)
        return frames, has_gap

    async def read_database(self) -> AsyncIterator[bytes]:
        """Page through the run's events after `last_sent` until there are none.

        The last read is repeated if the listener reconnected while it was in
        flight: that reconnect's resync could not yet see this stream's
        position, so events committed during the outage are this read's to find.
        """
        page_size = self.options.replay_page_size
        while not self.has_ended:
            resyncs_before = self.feeds.resync_count
            async with self.database.connection() as conn:
                rows = await event_queries.read_events_after(
                    conn, self.run_id, self.last_sent, page_size
                )

            frames: list[bytes] = []
            for row in rows:
                event = encode_event(row)
                frames.append(event.frame)
                self.mark_sent(event)
                if event.is_terminal:
                    break
            self.replay_sent_unflushed += len(frames)
            for chunk in group_frames(frames):
                yield chunk

            if len(rows) < page_size and self.feeds.resync_count == resyncs_before:
                return

    def mark_sent(self, event: EncodedEvent) -> None:
        self.last_sent = event.seq
        self.events_sent += 1
        if event.is_terminal:
            self.has_ended = True
            self.close_reason = "terminal"

    def request_heartbeat(self) -> None:
        if self.subscription is not None:
            self.subscription.request_heartbeat()

    def flush_metrics(self) -> None:
        if self.live_sent_unflushed:
            metrics.LIVE_EVENTS_SENT.inc(self.live_sent_unflushed)
            self.live_sent_unflushed = 0
        if self.replay_sent_unflushed:
            metrics.REPLAY_EVENTS_SENT.inc(self.replay_sent_unflushed)
            self.replay_sent_unflushed = 0

    def close(self, reason: str | None = None) -> None:
        """Release the subscription and log the summary; safe to call twice."""
        if reason is not None and self.close_reason == "client_gone":
            self.close_reason = reason
        if self.closed:
            return
        self.closed = True
        self.flush_metrics()
        if self.subscription is not None:
            self.subscription.close()
            metrics.STREAMS_OPEN.dec()
        metrics.STREAMS_CLOSED.labels(self.close_reason).inc()
        if self.on_close is not None:
            self.on_close()
        logger.info(
            "stream.closed",
            extra={
                "run_id": format_run_id(self.run_id),
                "org_id": format_org_id(self.org_id),
                "reason": self.close_reason,
                "events_sent": self.events_sent,
                "last_seq": self.last_sent,
                "duration_ms": round((time.monotonic() - self.opened_at) * 1000),
            },
        )
