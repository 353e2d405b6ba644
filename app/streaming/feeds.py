"""Fan-out by run: each notified event is read once per process and shared.

A `RunFeed` exists while at least one stream follows its run. On notification
it reads the new rows once, encodes each frame once, and hands the same bytes
to every `Subscription`. Why the feed may start in the middle of a run and
still miss nothing is told in docs/ARCHITECTURE.md ("The hand-over").
"""

import asyncio
import collections
import datetime
import logging
import uuid
from collections.abc import Callable, Iterable

from app import metrics
from app.db import events as event_queries
from app.db.engine import Database
from app.errors import ServiceUnavailable
from app.streaming.sse import EncodedEvent, encode_event, format_run_id

logger = logging.getLogger(__name__)

# After a failed read the feed retries with a growing pause, so that a
# database outage costs a handful of attempts per run, not a busy loop.
FETCH_RETRY_FIRST_SECONDS = 0.2
FETCH_RETRY_MAX_SECONDS = 5.0

# Frames are shared, so this mostly bounds what a lagging stream keeps alive
# after the others have sent it: with large payloads a count alone could pin
# hundreds of megabytes.
MAX_BUFFERED_BYTES = 4 * 1024 * 1024


class Subscription:
    """One stream's place in its run's feed: a bounded buffer and a wake-up.

    The buffer holds references to shared frames. When it would exceed
    `max_events`, or MAX_BUFFERED_BYTES of frames, it is dropped and
    `overflowed` is set: the stream then catches up from the database instead
    of the server queueing without limit for a client that reads slowly.
    """

    def __init__(self, feed: "RunFeed", max_events: int) -> None:
        self.feed = feed
        self.max_events = max_events
        self.pending: collections.deque[EncodedEvent] = collections.deque()
        self.pending_bytes = 0
        self.overflowed = False
        self.wakeup = asyncio.Event()
        # Set with the wake-up when the stream has been idle for a heartbeat
        # interval (supervisor.py); sending anything makes it moot.
        self.heartbeat_due = False
        # The last sequence the stream has written, or None while it replays;
        # the feed reads it after a listener outage (see RunFeed.resync).
        self.live_position: int | None = None

    def deliver(self, events: list[EncodedEvent], added_bytes: int) -> None:
        """Append `events` (`added_bytes` of frames, summed once by the feed)."""
        if self.overflowed:
            return
        if (
            len(self.pending) + len(events) > self.max_events
            or self.pending_bytes + added_bytes > MAX_BUFFERED_BYTES
        ):
            self.pending.clear()
            self.pending_bytes = 0
            self.overflowed = True
        else:
            self.pending.extend(events)
            self.pending_bytes += added_bytes
        self.wakeup.set()

    def request_heartbeat(self) -> None:
        self.heartbeat_due = True
        self.wakeup.set()

    def take(self) -> list[EncodedEvent]:
        """Everything buffered so far, oldest first; empties the buffer."""
        events = list(self.pending)
        self.pending.clear()
        self.pending_bytes = 0
        self.heartbeat_due = False
        self.wakeup.clear()
        return events

    def close(self) -> None:
        self.feed.unsubscribe(self)


class RunFeed:
    """Reads one run's new events once for all of its subscriptions."""

    def __init__(
        self,
        run_id: uuid.UUID,
        database: Database,
        page_size: int,
        on_empty: Callable[["RunFeed"], None],
    ) -> None:
        self.run_id = run_id
        self.database = database
        self.page_size = page_size
        self.on_empty = on_empty
        self.subscriptions: set[Subscription] = set()

        # Invariant: every event with a sequence up to fetched_seq has been
        # handed to all subscriptions that existed when it was read. None
        # until the first notification tells the feed where the run stands.
        self.fetched_seq: int | None = None
        self.notified_seq = 0
        self.read_to_end = False
        self.fetch_task: asyncio.Task[None] | None = None

    def subscribe(self, max_events: int) -> Subscription:
        subscription = Subscription(self, max_events)
        self.subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)
        if not self.subscriptions:
            if self.fetch_task is not None:
                self.fetch_task.cancel()
            self.on_empty(self)

    def notify(self, seq: int) -> None:
        """An event with this sequence has committed."""
        if self.fetched_seq is None:
            # Notifications arrive in commit order and commit order is
            # sequence order: every earlier event committed before this feed
            # existed, so the replay of each stream covers it.
            self.fetched_seq = seq - 1
        if seq <= self.fetched_seq:
            return
        self.notified_seq = max(self.notified_seq, seq)
        self.start_fetch()

    def resync(self) -> None:
        """Catch up after notifications may have been lost (listener outage)."""
        if self.fetched_seq is None:
            positions = [
                sub.live_position
                for sub in self.subscriptions
                if sub.live_position is not None
            ]
            # Streams still replaying will read the lost events themselves.
            if not positions:
                return
            self.fetched_seq = min(positions)
        self.read_to_end = True
        self.start_fetch()

    def start_fetch(self) -> None:
        if self.fetch_task is None or self.fetch_task.done():
            self.fetch_task = asyncio.create_task(
                self.fetch_until_current(), name=f"feed-{self.run_id}"
            )

    async def fetch_until_current(self) -> None:
        """Read pages until everything notified so far has been handed out."""
        retry_seconds = FETCH_RETRY_FIRST_SECONDS
        while self.fetched_seq is not None and (
            self.fetched_seq < self.notified_seq or self.read_to_end
        ):
            try:
                async with self.database.connection() as conn:
                    rows = await event_queries.read_events_after(
                        conn, self.run_id, self.fetched_seq, self.page_size
                    )
                metrics.FEED_READS.inc()
            except ServiceUnavailable:
                logger.warning(
                    "feed.read_failed",
                    extra={
                        "run_id": format_run_id(self.run_id),
                        "retry_s": retry_seconds,
                    },
                )
                await asyncio.sleep(retry_seconds)
                retry_seconds = min(retry_seconds * 2, FETCH_RETRY_MAX_SECONDS)
                continue

            retry_seconds = FETCH_RETRY_FIRST_SECONDS
            if rows:
                encoded = [encode_event(row) for row in rows]
                self.fetched_seq = encoded[-1].seq
                self.hand_out(encoded)
            if len(rows) < self.page_size:
                # The feed has seen everything committed before this read;
                # only notifications that arrived during it remain.
                self.read_to_end = False
                if not rows:
                    self.notified_seq = min(self.notified_seq, self.fetched_seq)

    def hand_out(self, events: list[EncodedEvent]) -> None:
        # Summed here, not per subscription: with thousands of streams on a
        # run this loop is the hottest in the process.
        added_bytes = sum(len(event.frame) for event in events)
        for subscription in list(self.subscriptions):
            subscription.deliver(events, added_bytes)

        # One sample per read, not per stream: the oldest event of the batch
        # waited longest.
        lag = datetime.datetime.now(datetime.UTC) - events[0].created_at
        metrics.COMMIT_TO_FANOUT_SECONDS.observe(lag.total_seconds())


class RunFeeds:
    """The process's feeds, one per run that has streams, keyed for the listener."""

    def __init__(self, database: Database, page_size: int) -> None:
        self.database = database
        self.page_size = page_size
        self.feeds: dict[str, RunFeed] = {}
        # Counts listener reconnections. A stream compares it before and
        # after its last replay read: a resync that ran while that read was
        # in flight could not see the stream's position (stream.py).
        self.resync_count = 0

    def subscribe(self, run_id: uuid.UUID, max_events: int) -> Subscription:
        key = str(run_id)
        feed = self.feeds.get(key)
        if feed is None:
            feed = RunFeed(run_id, self.database, self.page_size, self.forget)
            self.feeds[key] = feed
        return feed.subscribe(max_events)

    def forget(self, feed: RunFeed) -> None:
        if self.feeds.get(str(feed.run_id)) is feed:
            del self.feeds[str(feed.run_id)]

    def notify(self, payload: str) -> None:
        """Route one notification payload (`<run uuid> <seq>`) to its feed."""
        run_key, _, seq_text = payload.partition(" ")
        feed = self.feeds.get(run_key)
        if feed is None:
            return
        try:
            seq = int(seq_text)
        except ValueError:
            logger.warning("feed.bad_notification", extra={"payload": payload[:80]})
            return
        feed.notify(seq)

    def resync_all(self) -> None:
        self.resync_count += 1
        for feed in list(self.feeds.values()):
            feed.resync()

    def all_feeds(self) -> Iterable[RunFeed]:
        return self.feeds.values()

    async def close(self) -> None:
        tasks = [feed.fetch_task for feed in self.feeds.values() if feed.fetch_task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.feeds.clear()
