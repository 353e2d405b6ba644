"""A counting PostgreSQL proxy: what a server under test asks of the database.

PostgreSQL 15 publishes an idle session's statistics up to ten seconds late,
and pg_stat_statements needs a restart to load, so the benchmark counts on
the wire instead. This process forwards bytes between the server under test
and PostgreSQL unchanged (forwarding first, then reading a copy) and keeps,
per application_name, the statements executed (simple `Query` messages and
extended-protocol `Execute`s, keyed by their SQL text), the rows each
returned (`DataRow`), and the notifications delivered.

It refuses SSL and GSS encryption requests itself (answering `N`), so the
stream stays readable; everything else passes through.

Run as `python -m bench.pgwire --upstream-port 5432`; it prints its port,
then answers `snapshot` lines on stdin with one JSON line of cumulative
counts.
"""

import argparse
import asyncio
import collections
import struct
import sys

import orjson

SSL_REQUEST = 80877103
GSS_REQUEST = 80877104
MAX_SQL_CHARS = 160


def normalise(sql: bytes) -> str:
    return " ".join(sql.decode(errors="replace").split())[:MAX_SQL_CHARS]


class Counts:
    def __init__(self) -> None:
        # (application, sql) -> [calls, rows]
        self.statements: collections.defaultdict[tuple[str, str], list[int]] = (
            collections.defaultdict(lambda: [0, 0])
        )
        self.notifications: collections.Counter[str] = collections.Counter()
        self.open: collections.Counter[str] = collections.Counter()
        self.opened: collections.Counter[str] = collections.Counter()

    def snapshot(self) -> dict[str, object]:
        return {
            "statements": [
                {"app": app, "sql": sql, "calls": calls, "rows": rows}
                for (app, sql), (calls, rows) in self.statements.items()
            ],
            "notifications": dict(self.notifications),
            "open": {app: n for app, n in self.open.items() if n},
            "opened": dict(self.opened),
        }


class Session:
    """One proxied connection: both byte streams and what they say."""

    def __init__(self, counts: Counts) -> None:
        self.counts = counts
        self.app = ""
        self.started = False
        self.front = b""
        self.back = b""
        self.prepared: dict[bytes, str] = {}
        self.bound = ""
        # Statements sent and not yet complete, oldest first.
        self.running: collections.deque[list[int]] = collections.deque()

    def read_front(self, data: bytes, reply: "asyncio.Transport") -> bytes:
        """Read client bytes; return what to forward upstream (all but SSL asks)."""
        forward = data
        if not self.started:
            forward, data = self.read_before_startup(data, reply)
            if not self.started:
                return forward
        messages, self.front = split_messages(self.front + data)
        for kind, body in messages:
            self.read_front_message(kind, body)
        return forward

    def read_before_startup(
        self, data: bytes, reply: "asyncio.Transport"
    ) -> tuple[bytes, bytes]:
        """Answer encryption requests; (bytes to forward, typed bytes after startup)."""
        buffer = self.front + data
        while len(buffer) >= 8:
            (length,) = struct.unpack_from("!i", buffer)
            if len(buffer) < length:
                break
            packet, buffer = buffer[:length], buffer[length:]
            (code,) = struct.unpack_from("!i", packet, 4)
            if length == 8 and code in (SSL_REQUEST, GSS_REQUEST):
                reply.write(b"N")
                continue
            self.read_startup(packet)
            self.started = True
            self.front = b""
            return packet + buffer, buffer
        self.front = buffer
        return b"", b""

    def read_startup(self, packet: bytes) -> None:
        fields = packet[8:].split(b"\x00")
        for name, value in zip(fields[::2], fields[1::2], strict=False):
            if name == b"application_name":
                self.app = value.decode(errors="replace")
        self.counts.open[self.app] += 1
        self.counts.opened[self.app] += 1

    def read_front_message(self, kind: bytes, body: bytes) -> None:
        if kind == b"Q":
            self.start_statement(normalise(body.rstrip(b"\x00")))
        elif kind == b"P":
            name, _, rest = body.partition(b"\x00")
            self.prepared[name] = normalise(rest.partition(b"\x00")[0])
        elif kind == b"B":
            _portal, _, rest = body.partition(b"\x00")
            self.bound = self.prepared.get(rest.partition(b"\x00")[0], "?")
        elif kind == b"E":
            self.start_statement(self.bound)

    def start_statement(self, sql: str) -> None:
        entry = self.counts.statements[(self.app, sql)]
        entry[0] += 1
        self.running.append(entry)

    def read_back(self, data: bytes) -> None:
        messages, self.back = split_messages(self.back + data)
        for kind, _body in messages:
            if kind == b"D":
                if self.running:
                    self.running[0][1] += 1
            elif kind in (b"C", b"I"):
                if self.running:
                    self.running.popleft()
            elif kind == b"Z":
                self.running.clear()
            elif kind == b"A":
                self.counts.notifications[self.app] += 1

    def close(self) -> None:
        if self.started:
            self.counts.open[self.app] -= 1
            self.started = False


def split_messages(buffer: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The complete typed messages at the start of `buffer`, and the rest.

    After start-up every message of the protocol, either way, is a type byte,
    a 4-byte length that counts itself, and the body.
    """
    messages = []
    pos = 0
    while len(buffer) - pos >= 5:
        (length,) = struct.unpack_from("!i", buffer, pos + 1)
        end = pos + 1 + length
        if end > len(buffer):
            break
        messages.append((buffer[pos : pos + 1], buffer[pos + 5 : end]))
        pos = end
    return messages, buffer[pos:]


class Upstream(asyncio.Protocol):
    def __init__(self, client: "asyncio.Transport", session: Session) -> None:
        self.client = client
        self.session = session

    def data_received(self, data: bytes) -> None:
        self.client.write(data)
        self.session.read_back(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()


class Downstream(asyncio.Protocol):
    def __init__(self, counts: Counts, upstream_port: int) -> None:
        self.session = Session(counts)
        self.upstream_port = upstream_port
        self.transport: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.waiting: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        asyncio.get_running_loop().create_task(self.connect())

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        if self.transport is None:
            return
        try:
            upstream, _ = await loop.create_connection(
                lambda: Upstream(self.transport, self.session),  # type: ignore[arg-type]
                "127.0.0.1",
                self.upstream_port,
            )
        except OSError:
            self.transport.close()
            return
        self.upstream = upstream
        for data in self.waiting:
            upstream.write(data)
        self.waiting = []

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        forward = self.session.read_front(data, self.transport)
        if not forward:
            return
        if self.upstream is None:
            self.waiting.append(forward)
        else:
            self.upstream.write(forward)

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.close()
        if self.upstream is not None:
            self.upstream.close()


async def serve(upstream_port: int) -> None:
    loop = asyncio.get_running_loop()
    counts = Counts()
    server = await loop.create_server(
        lambda: Downstream(counts, upstream_port), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    while line := await reader.readline():
        if line.strip() == b"snapshot":
            sys.stdout.buffer.write(orjson.dumps(counts.snapshot()) + b"\n")
            sys.stdout.buffer.flush()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pgwire")
    parser.add_argument("--upstream-port", type=int, default=5432)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        asyncio.run(serve(args.upstream_port))
    else:
        uvloop.run(serve(args.upstream_port))


if __name__ == "__main__":
    main()
