"""Clients that follow a slot's runs over raw HTTP/1.1 and always resume.

A raw socket, not httpx, so that a reset is a real TCP RST and a slow client
really stops draining its socket.
"""

import asyncio
import random
import socket
import struct
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from app.db.events import TERMINAL_TYPES
from app.ids import RUN_PREFIX, format_id
from soak.load import Slot

# Heartbeats come every 2 s (soak/cluster.py); a read this slow is a dead path.
READ_TIMEOUT_SECONDS = 10.0
RESUME_DELAY_SECONDS = (0.1, 0.5)
# A slow client takes one chunk a second, far below what its run is sent,
# and small buffers on its side make the server feel it within seconds.
SLOW_READ_PAUSE_SECONDS = 1.0
RECEIVE_BUFFER_BYTES = 8192
STREAM_LIMIT_BYTES = 16384


class ClientReset(Exception):
    """We reset the connection on purpose."""


class UnexpectedStatus(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


@dataclass
class Follow:
    """One client's view of one run: every id received, in order."""

    run_id: uuid.UUID
    received: list[str] = field(default_factory=list)
    connections: int = 0
    completed: bool = False


@dataclass
class Client:
    name: str
    key: str
    slot: Slot
    targets: Callable[[], tuple[str, int]]
    rng: random.Random
    follows: list[Follow] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    resets: int = 0
    frames: int = 0
    slow_until: float = 0.0
    writer: asyncio.StreamWriter | None = None
    resetting: bool = False
    # Where the current connection is: connect, status or body.
    stage: str = "connect"

    @property
    def is_connected(self) -> bool:
        return self.writer is not None

    def reset(self) -> None:
        """Abort the open connection with a TCP RST."""
        if self.writer is None:
            return
        self.resetting = True
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        self.writer.transport.abort()

    def slow_down(self, seconds: float) -> None:
        self.slow_until = time.monotonic() + seconds

    async def run(self, deadline: float) -> None:
        """Follow the slot's runs one after another until the slot finishes."""
        run_id = self.slot.run_id
        while time.monotonic() < deadline:
            follow = Follow(run_id)
            self.follows.append(follow)
            await self.follow_to_end(follow, deadline)
            next_run = await self.wait_for_next_run(run_id, deadline)
            if next_run is None:
                return
            run_id = next_run

    async def wait_for_next_run(
        self, run_id: uuid.UUID, deadline: float
    ) -> uuid.UUID | None:
        while True:
            runs = self.slot.runs
            if run_id != runs[-1]:
                return runs[runs.index(run_id) + 1]
            if self.slot.finished:
                return None
            changed = self.slot.changed
            try:
                await asyncio.wait_for(changed.wait(), deadline - time.monotonic())
            except TimeoutError:
                return None

    async def follow_to_end(self, follow: Follow, deadline: float) -> None:
        while not follow.completed and time.monotonic() < deadline:
            try:
                await self.stream_once(follow)
            except Exception as exc:
                # A client that gives up on the first fault proves nothing:
                # every failure is counted by kind, then it resumes.
                self.count_failure(exc)
            finally:
                self.writer = None
                self.resetting = False
            if not follow.completed:
                await asyncio.sleep(self.rng.uniform(*RESUME_DELAY_SECONDS))

    def count_failure(self, exc: Exception) -> None:
        if self.resetting:
            self.resets += 1
        elif isinstance(exc, UnexpectedStatus):
            self.errors[f"http_{exc.status}"] += 1
        else:
            slow = " while slow" if time.monotonic() < self.slow_until else ""
            self.errors[f"{type(exc).__name__}@{self.stage}{slow}"] += 1

    async def stream_once(self, follow: Follow) -> None:
        host, port = self.targets()
        self.stage = "connect"
        reader, writer = await open_small_connection(host, port)
        self.writer = writer
        follow.connections += 1
        try:
            writer.write(self.request(follow, f"{host}:{port}"))
            self.stage = "status"
            status = await self.read_status(reader)
            if status == 204:
                # Only a cursor at the terminal event gets 204, and a client
                # stops at its terminal event: this would be a fault.
                follow.completed = True
                raise UnexpectedStatus(status)
            if status != 200:
                raise UnexpectedStatus(status)
            self.stage = "body"
            await self.read_events(reader, follow)
        finally:
            writer.close()

    def request(self, follow: Follow, host: str) -> bytes:
        path = f"/api/v1/improve-runs/{format_id(RUN_PREFIX, follow.run_id)}/events"
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}",
            f"Authorization: Bearer {self.key}",
            "Accept: text/event-stream",
            "Connection: close",
        ]
        if follow.received:
            lines.append(f"Last-Event-ID: {follow.received[-1]}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def read_status(self, reader: asyncio.StreamReader) -> int:
        async with asyncio.timeout(READ_TIMEOUT_SECONDS):
            head = await reader.readuntil(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1])

    async def read_events(self, reader: asyncio.StreamReader, follow: Follow) -> None:
        """Read the chunked body, frame by frame, until it ends or the run does."""
        buffer = b""
        while True:
            chunk = await self.read_chunk(reader)
            if not chunk:
                return
            buffer += chunk
            *blocks, buffer = buffer.split(b"\n\n")
            for block in blocks:
                if self.take_frame(block, follow):
                    return
            if time.monotonic() < self.slow_until:
                await asyncio.sleep(SLOW_READ_PAUSE_SECONDS)

    async def read_chunk(self, reader: asyncio.StreamReader) -> bytes:
        async with asyncio.timeout(READ_TIMEOUT_SECONDS):
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            data = await reader.readexactly(size + 2)
        return data[:-2]

    def take_frame(self, block: bytes, follow: Follow) -> bool:
        """Record an event frame's id; whether it was the run's terminal event."""
        fields = dict(
            line.split(b": ", 1) for line in block.split(b"\n") if b": " in line
        )
        if b"id" not in fields:
            return False
        self.frames += 1
        follow.received.append(fields[b"id"].decode())
        if fields.get(b"event", b"").decode() in TERMINAL_TYPES:
            follow.completed = True
            return True
        return False


async def open_small_connection(
    host: str, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection with a small receive buffer, set before the handshake
    so that the window the server sees is small from the start."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, limit=STREAM_LIMIT_BYTES)
