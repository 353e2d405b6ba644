"""The load client process: many SSE streams on raw asyncio sockets.

No HTTP library: each stream is an `asyncio.Protocol` (on uvloop) that writes
one GET, reads the status line, then undoes HTTP/1.1 chunked framing with
`bytes.find` and counts events with `bytes.count`. Latency comes from the
`"t":` field of each event's payload, a `time.monotonic()` the writer took
just before its INSERT (CLOCK_MONOTONIC is one clock for every process on
Linux). Every server under test sends whole frames in each chunk, so a chunk
is read as a unit.

Run as `python -m bench.sse_client`; it reads JSON commands from stdin, one a
line, and answers each with one JSON line on stdout (bench/load.py is the
other side).
"""

import asyncio
import contextlib
import re
import resource
import socket
import sys
import time
from typing import Any, cast

import orjson

from bench.stats import summarise_latencies

JsonObject = dict[str, Any]

TIMESTAMP = re.compile(rb'"t": ?([0-9]+\.?[0-9]*)')
EVENT_MARKER = b"\ndata: "
HEAD_END = b"\r\n\r\n"


class Totals:
    """Counters shared by every stream, reset at each measurement window."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.events = 0
        self.bytes = 0
        self.chunks = 0
        self.latencies: list[float] = []
        # Per event (its stamp): latency at the first and the last stream.
        self.first_last: dict[bytes, list[float]] = {}
        self.started = time.monotonic()
        self.cpu_started = time.process_time()


class SseStream(asyncio.Protocol):
    def __init__(self, request: bytes, totals: Totals, *, frozen: bool) -> None:
        self.request = request
        self.totals = totals
        self.frozen = frozen
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.head: asyncio.Future[int] = loop.create_future()
        self.ended: asyncio.Future[None] = loop.create_future()
        self.buffer = b""
        self.in_body = False
        self.status = 0
        self.events = 0
        self.bytes = 0
        self.sent_at = time.monotonic()
        self.ended_at: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.sent_at = time.monotonic()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buffer = self.buffer + data if self.buffer else data
        if not self.in_body:
            end = buffer.find(HEAD_END)
            if end < 0:
                self.buffer = buffer
                return
            if not self.read_head(buffer[:end]):
                return
            buffer = buffer[end + 4 :]

        pos = 0
        size_of_buffer = len(buffer)
        while pos < size_of_buffer:
            line_end = buffer.find(b"\r\n", pos)
            if line_end < 0:
                break
            size = int(buffer[pos:line_end], 16)
            if size == 0:
                self.finish(now)
                pos = size_of_buffer
                break
            start = line_end + 2
            stop = start + size
            if stop + 2 > size_of_buffer:
                break
            self.read_chunk(buffer[start:stop], now)
            pos = stop + 2
        self.buffer = buffer[pos:] if pos < size_of_buffer else b""

    def read_head(self, head: bytes) -> bool:
        self.status = int(head[9:12])
        self.in_body = True
        if not self.head.done():
            self.head.set_result(self.status)
        if self.status != 200:
            self.finish(time.monotonic())
            return False
        if self.frozen and self.transport is not None:
            # A reader that stops: the kernel buffers fill, then the server's.
            self.transport.pause_reading()
            return False
        return True

    def read_chunk(self, chunk: bytes, now: float) -> None:
        totals = self.totals
        count = chunk.count(EVENT_MARKER)
        self.bytes += len(chunk)
        totals.bytes += len(chunk)
        if count:
            self.events += count
            totals.events += count
            totals.chunks += 1
            latencies = totals.latencies
            first_last = totals.first_last
            for stamp in TIMESTAMP.findall(chunk):
                latency = now - float(stamp)
                latencies.append(latency)
                seen = first_last.get(stamp)
                if seen is None:
                    first_last[stamp] = [latency, latency]
                else:
                    seen[1] = latency

    def finish(self, now: float) -> None:
        if self.ended_at is None:
            self.ended_at = now
        if not self.ended.done():
            self.ended.set_result(None)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.head.done():
            self.head.set_exception(ConnectionError("closed before a response"))
        self.finish(time.monotonic())


class LoadClient:
    """The streams of this process and the commands that drive them."""

    def __init__(self) -> None:
        self.totals = Totals()
        self.streams: list[SseStream] = []

    async def open(self, command: JsonObject) -> JsonObject:
        """Open `count` streams on each target path; wait for their status lines."""
        host: str = command["host"]
        port: int = command["port"]
        headers = "".join(f"{k}: {v}\r\n" for k, v in command["headers"].items())
        frozen = bool(command.get("frozen", False))
        rcvbuf: int | None = command.get("rcvbuf")
        limit = asyncio.Semaphore(int(command.get("concurrency", 200)))
        started = time.monotonic()

        async def open_one(path: str) -> int:
            request = (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{headers}\r\n"
            ).encode()
            async with limit:
                stream = await self.connect(host, port, request, frozen, rcvbuf)
                self.streams.append(stream)
                return await stream.head

        paths = [path for path, count in command["targets"] for _ in range(count)]
        results = await asyncio.wait_for(
            asyncio.gather(*(open_one(p) for p in paths), return_exceptions=True),
            command.get("timeout", 120),
        )
        statuses: dict[str, int] = {}
        for result in results:
            key = str(result) if isinstance(result, int) else type(result).__name__
            statuses[key] = statuses.get(key, 0) + 1
        return {
            "opened": statuses.get("200", 0),
            "failed": len(paths) - statuses.get("200", 0),
            "statuses": statuses,
            "seconds": round(time.monotonic() - started, 3),
        }

    async def connect(
        self, host: str, port: int, request: bytes, frozen: bool, rcvbuf: int | None
    ) -> SseStream:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        try:
            await loop.sock_connect(sock, (host, port))
        except OSError:
            sock.close()
            raise
        _transport, stream = await loop.create_connection(
            lambda: SseStream(request, self.totals, frozen=frozen), sock=sock
        )
        return stream

    def window(self) -> JsonObject:
        """What arrived since the last window, then start a new one."""
        totals = self.totals
        seconds = time.monotonic() - totals.started
        result = {
            "events": totals.events,
            "bytes": totals.bytes,
            # Events per chunk with events: above 1, the server coalesced.
            "events_per_write": round(totals.events / totals.chunks, 2)
            if totals.chunks
            else None,
            "seconds": round(seconds, 4),
            "latency_ms": summarise_latencies(totals.latencies),
            # How long after the writer the first stream got each event, and
            # how long the fan-out from first to last stream took.
            "first_ms": summarise_latencies([f for f, _ in totals.first_last.values()]),
            "spread_ms": summarise_latencies(
                [last - first for first, last in totals.first_last.values()]
            ),
            "client_cpu": round((time.process_time() - totals.cpu_started) / seconds, 3)
            if seconds > 0
            else 0.0,
            "streams": len(self.streams),
            "ended": sum(1 for s in self.streams if s.ended_at is not None),
        }
        totals.reset()
        return result

    async def wait_for_events(self, command: JsonObject) -> JsonObject:
        """Wait until the window holds `events`, or `timeout` passes."""
        target = int(command["events"])
        deadline = time.monotonic() + float(command["timeout"])
        while self.totals.events < target and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return {"events": self.totals.events}

    async def wait_quiet(self, command: JsonObject) -> JsonObject:
        """Wait until nothing has arrived for `quiet` seconds (or `timeout`)."""
        quiet = float(command["quiet"])
        deadline = time.monotonic() + float(command["timeout"])
        last = self.totals.bytes
        calm_since = time.monotonic()
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if self.totals.bytes != last:
                last = self.totals.bytes
                calm_since = time.monotonic()
            elif time.monotonic() - calm_since >= quiet:
                break
        return {"bytes": self.totals.bytes}

    async def wait_ended(self, command: JsonObject) -> JsonObject:
        """Wait for every non-frozen stream to end; how long they took, in all."""
        live = [s for s in self.streams if not s.frozen]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(s.ended for s in live), return_exceptions=True),
                float(command["timeout"]),
            )
        ended = [s for s in live if s.ended_at is not None]
        seconds = (
            max(s.ended_at or 0.0 for s in ended) - min(s.sent_at for s in live)
            if ended
            else 0.0
        )
        return {
            "ended": len(ended),
            "streams": len(live),
            "seconds": round(seconds, 4),
            "events": sum(s.events for s in live),
            "bytes": sum(s.bytes for s in live),
        }

    def close_all(self) -> JsonObject:
        for stream in self.streams:
            if stream.transport is not None:
                stream.transport.close()
        closed = len(self.streams)
        self.streams = []
        return {"closed": closed}

    async def handle(self, command: JsonObject) -> JsonObject:
        op = command["op"]
        if op == "open":
            return await self.open(command)
        if op == "window":
            return self.window()
        if op == "wait_for_events":
            return await self.wait_for_events(command)
        if op == "wait_quiet":
            return await self.wait_quiet(command)
        if op == "wait_ended":
            return await self.wait_ended(command)
        if op == "close_all":
            return self.close_all()
        raise ValueError(f"unknown command {op!r}")


def raise_file_limit() -> None:
    """Allow as many sockets as the hard limit does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve_commands() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    client = LoadClient()
    while line := await reader.readline():
        command: JsonObject = orjson.loads(line)
        if command["op"] == "exit":
            break
        try:
            answer = await client.handle(command)
        except Exception as exc:
            # The controller reads the error and fails the scenario; the
            # process stays up for the next command.
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.buffer.write(orjson.dumps(answer) + b"\n")
        sys.stdout.buffer.flush()
    client.close_all()


def main() -> None:
    raise_file_limit()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        asyncio.run(serve_commands())
    else:
        uvloop.run(serve_commands())


if __name__ == "__main__":
    main()
