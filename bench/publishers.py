"""Writers that publish timestamped events at a steady rate.

Every event's payload carries `t`, the writer's `time.monotonic()` taken just
before the write. For the database systems the write is the publish INSERT
(autocommit, so the commit follows within the same round trip); for `bare`
it is the POST that hands the payload to the server. Commit-to-client
latency as measured is therefore a little pessimistic: it includes the
INSERT itself.
"""

import asyncio
import time
import uuid
from typing import Any, Protocol

import asyncpg

from app.db.events import publish_event
from bench.wire import KeepAliveConnection

CHANNEL = "selftune_run_events"
WRITER_APPLICATION_NAME = "bench-writer"
FLOOR_APPLICATION_NAME = "bench-floor"


def make_payload(stamp: float, pad_bytes: int) -> str:
    pad = f', "pad": "{"x" * pad_bytes}"' if pad_bytes else ""
    return f'{{"t": {stamp:.6f}{pad}}}'


class Publisher(Protocol):
    run_count: int

    async def publish(self, run_index: int) -> None: ...

    async def close(self) -> None: ...


class DatabasePublisher:
    """Publishes with `app.db.events.publish_event`, the contract's INSERT."""

    def __init__(self, conn: Any, run_ids: list[uuid.UUID], pad_bytes: int) -> None:
        self.conn = conn
        self.run_ids = run_ids
        self.run_count = len(run_ids)
        self.pad_bytes = pad_bytes
        # "<run> <seq>", as notified, to the writer's timestamp.
        self.sent: dict[str, float] = {}

    @classmethod
    async def connect(
        cls, dsn: str, run_ids: list[uuid.UUID], pad_bytes: int = 0
    ) -> "DatabasePublisher":
        conn = await asyncpg.connect(
            dsn, server_settings={"application_name": WRITER_APPLICATION_NAME}
        )
        return cls(conn, run_ids, pad_bytes)

    async def publish(self, run_index: int) -> None:
        run_id = self.run_ids[run_index]
        stamp = time.monotonic()
        _event_id, seq = await publish_event(
            self.conn,
            run_id,
            "phase_changed",
            phase="bench",
            payload=make_payload(stamp, self.pad_bytes),
        )
        self.sent[f"{run_id} {seq}"] = stamp

    def take_sent(self) -> dict[str, float]:
        sent, self.sent = self.sent, {}
        return sent

    async def close(self) -> None:
        await self.conn.close()


class BarePublisher:
    """POSTs the same payloads to the bare peer over one keep-alive connection."""

    def __init__(self, port: int, run_keys: list[str], pad_bytes: int = 0) -> None:
        self.connection = KeepAliveConnection(port)
        self.run_keys = run_keys
        self.run_count = len(run_keys)
        self.pad_bytes = pad_bytes

    async def publish(self, run_index: int) -> None:
        stamp = time.monotonic()
        body = make_payload(stamp, self.pad_bytes).encode()
        status = await self.connection.post(
            f"/publish/{self.run_keys[run_index]}", body
        )
        if status != 200:
            raise RuntimeError(f"bare peer answered {status} to a publish")

    async def close(self) -> None:
        await self.connection.close()


class FloorListener:
    """A bare asyncpg LISTEN session: when does each notification arrive?"""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.arrivals: dict[str, float] = {}

    @classmethod
    async def connect(cls, dsn: str) -> "FloorListener":
        conn = await asyncpg.connect(
            dsn, server_settings={"application_name": FLOOR_APPLICATION_NAME}
        )
        listener = cls(conn)
        await conn.add_listener(CHANNEL, listener.on_notification)
        return listener

    def on_notification(
        self, _conn: Any, _pid: int, _channel: str, payload: str
    ) -> None:
        self.arrivals[payload] = time.monotonic()

    async def latencies(self, sent: dict[str, float]) -> list[float]:
        """Commit-to-notification times of `sent`, once their notifications are in."""
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(k not in self.arrivals for k in sent):
            await asyncio.sleep(0.01)
        found = [
            self.arrivals.pop(k) - t for k, t in sent.items() if k in self.arrivals
        ]
        self.arrivals.clear()
        return found

    async def close(self) -> None:
        await self.conn.close()


async def publish_at_rate(publisher: Publisher, rate: float, seconds: float) -> int:
    """Publish round-robin over the publisher's runs at `rate` events/s.

    The schedule is fixed in advance (event k is due at k / rate), so a slow
    write is followed by a quick catch-up rather than a lower rate; at most
    `rate * seconds` events are written. Returns how many were.
    """
    interval = 1.0 / rate
    start = time.monotonic()
    limit = max(1, int(rate * seconds))
    for index in range(limit):
        delay = start + index * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif time.monotonic() - start > seconds * 2:
            # The writer cannot keep up; stop rather than run on.
            return index
        await publisher.publish(index % publisher.run_count)
    return limit
