"""Clients that stop reading: bounded memory, no harm to others, a clean resume."""

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import asyncpg
import psutil

from app.db.engine import to_asyncpg_dsn
from app.ids import EVENT_PREFIX, format_id
from tests.fixtures.factories import run_typeid, seed_run
from tests.fixtures.server import run_serve_process
from tests.fixtures.sse import check_event_frame, open_stream, parse_frame

EVENT_COUNT = 5000
PAYLOAD = {"blob": "x" * 2000}
SEND_TIMEOUT_SECONDS = 10
HEARTBEAT_SECONDS = 1
RSS_GROWTH_LIMIT_BYTES = 50 * 1024 * 1024


class FrozenClient:
    """A raw socket that sends the request, reads a little, then stops reading."""

    def __init__(self, url: str, key: str) -> None:
        parts = urlsplit(url)
        self.sock = socket.socket()
        # A small receive window makes the server's sends back up quickly.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((parts.hostname, parts.port))
        request = (
            f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Authorization: Bearer {key}\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        self.received = b""

    def read_until(self, marker: bytes) -> None:
        while marker not in self.received:
            self.received += self.sock.recv(65536)

    def read_to_eof(self, timeout: float) -> None:
        """Read what the server sent before it gave up on us.

        A server that dropped us by TCP_USER_TIMEOUT resets the connection,
        which may also discard what was still unread; the resume covers that.
        """
        self.sock.settimeout(timeout)
        with contextlib.suppress(ConnectionResetError):
            while chunk := self.sock.recv(65536):
                self.received += chunk
        self.sock.close()

    def event_ids(self) -> list[str]:
        """Ids of the complete events received, from the chunked HTTP body."""
        body = dechunk(self.received.partition(b"\r\n\r\n")[2])
        complete, _, _partial = body.rpartition(b"\n\n")
        ids = []
        for block in complete.split(b"\n\n"):
            frame = parse_frame(block)
            if frame.is_event:
                ids.append(check_event_frame(frame)["id"])
        return ids


def dechunk(data: bytes) -> bytes:
    """The payload of an HTTP/1.1 chunked body, ignoring a cut-off tail."""
    body = b""
    while data:
        size_line, sep, rest = data.partition(b"\r\n")
        if not sep:
            break
        size = int(size_line, 16)
        if size == 0 or len(rest) < size:
            body += rest[:size]
            break
        body += rest[:size]
        data = rest[size + 2 :]
    return body


async def publish_many(dsn: str, run_id: uuid.UUID, count: int) -> list[str]:
    """Commit `count` events of 2 KB in transactions of 50; their ids in order."""
    conn = await asyncpg.connect(dsn)
    ids: list[str] = []
    try:
        for start in range(0, count, 50):
            async with conn.transaction():
                for index in range(start, min(start + 50, count)):
                    event_id = await conn.fetchval(
                        "INSERT INTO run_events (run_id, type, phase, payload)"
                        " VALUES ($1, 'phase_changed', $2, $3::jsonb) RETURNING id",
                        run_id,
                        f"step-{index}",
                        f'{{"blob": "{PAYLOAD["blob"]}"}}',
                    )
                    ids.append(format_id(EVENT_PREFIX, event_id))
    finally:
        await conn.close()
    return ids


async def test_frozen_reader_is_dropped_and_resumes_while_others_keep_up(
    own_database: Callable[[], Awaitable[str]],
) -> None:
    """One client reads two frames and freezes while 5,000 events of 2 KB are
    committed. The server's RSS stays within 50 MB, a healthy client gets
    every event, the frozen one is cut off within send timeout plus
    heartbeat, and resuming from its last complete event misses nothing."""
    database_url = await own_database()
    dsn = to_asyncpg_dsn(database_url)
    admin = await asyncpg.connect(dsn)
    key, run_id = await seed_run(admin)
    await admin.close()

    async with run_serve_process(
        database_url,
        SEND_TIMEOUT_SECONDS=str(SEND_TIMEOUT_SECONDS),
        HEARTBEAT_SECONDS=str(HEARTBEAT_SECONDS),
    ) as serve:
        url = serve.events_url(run_typeid(run_id))
        server = psutil.Process(serve.process.pid)
        frozen = FrozenClient(url, key)
        await asyncio.to_thread(frozen.read_until, b"retry:")
        rss_before = server.memory_info().rss

        async with open_stream(url, key, read_timeout=60) as healthy:
            await healthy.next_frame()
            published = await publish_many(dsn, run_id, EVENT_COUNT)
            healthy_ids = [
                (await healthy.next_event() or {}).get("id") for _ in published
            ]
            rss_after = server.memory_info().rss
            finished_publishing = time.monotonic()

            # The healthy stream is still open, so the first close is the
            # frozen one's: by the send timeout, or by the kernel giving up on
            # a zero window first (TCP_USER_TIMEOUT is the same length).
            async with asyncio.timeout(SEND_TIMEOUT_SECONDS + HEARTBEAT_SECONDS + 20):
                while "stream.closed" not in serve.logs():
                    await asyncio.sleep(0.1)
            closed_line = next(
                line for line in serve.logs().splitlines() if "stream.closed" in line
            )
            dropped_after = time.monotonic() - finished_publishing
        await asyncio.to_thread(frozen.read_to_eof, 10)

        frozen_ids = frozen.event_ids()
        cursor = {"Last-Event-ID": frozen_ids[-1]} if frozen_ids else {}
        async with open_stream(url, key, headers=cursor) as resumed:
            rest = [
                (await resumed.next_event() or {}).get("id")
                for _ in range(EVENT_COUNT - len(frozen_ids))
            ]

    # Either way it is a slow client, not one that left.
    assert "reason=slow_client" in closed_line
    assert healthy_ids == published
    assert rss_after - rss_before < RSS_GROWTH_LIMIT_BYTES
    assert dropped_after < SEND_TIMEOUT_SECONDS + HEARTBEAT_SECONDS + 15
    assert frozen_ids + rest == published
