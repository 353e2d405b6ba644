"""A TCP relay in front of a test server that can cut its connections for real.

Cutting aborts both sockets (a TCP reset), which is what a client sees when
a network path or a load balancer drops it mid-stream.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

CHUNK_BYTES = 65536


@dataclass
class Relay:
    """Forwards loopback connections to `upstream_port`, which may be changed.

    With `cut_after` set, the first connection that carries those bytes from
    the server is closed right after them, so a test can drop a stream in the
    middle of a chosen frame. `cut()` resets every open connection.
    """

    upstream_port: int
    port: int = 0
    cut_after: bytes | None = None
    connections: int = 0
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def handle(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.upstream_port
            )
        except OSError:
            # Nothing listens upstream: the client sees its connection closed.
            client_writer.close()
            return
        pair = {client_writer, upstream_writer}
        self.writers |= pair
        await asyncio.gather(
            self.pump(client_reader, upstream_writer),
            self.pump_down(upstream_reader, client_writer, upstream_writer),
            return_exceptions=True,
        )
        for writer in pair:
            self.writers.discard(writer)
            writer.close()

    async def pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while data := await reader.read(CHUNK_BYTES):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def pump_down(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream_writer: asyncio.StreamWriter,
    ) -> None:
        seen = b""
        while data := await reader.read(CHUNK_BYTES):
            marker = self.cut_after
            seen = seen + data if marker else b""
            index = seen.find(marker) if marker else -1
            if marker and index >= 0:
                # Forward exactly up to the marker's end, then end the client's
                # connection there (a FIN keeps what was sent readable).
                self.cut_after = None
                unsent = len(seen) - (index + len(marker))
                writer.write(data[: len(data) - unsent])
                await writer.drain()
                writer.close()
                upstream_writer.transport.abort()
                return
            writer.write(data)
            await writer.drain()
        writer.close()

    def cut(self) -> None:
        """Reset every open connection, in both directions."""
        abort(self.writers)


def abort(writers: set[asyncio.StreamWriter]) -> None:
    for writer in list(writers):
        writer.transport.abort()


@contextlib.asynccontextmanager
async def start_relay(upstream_port: int) -> AsyncIterator[Relay]:
    """Run a relay on a free loopback port in the current event loop."""
    relay = Relay(upstream_port)
    server = await asyncio.start_server(relay.handle, "127.0.0.1", 0)
    relay.port = server.sockets[0].getsockname()[1]
    try:
        yield relay
    finally:
        relay.cut()
        server.close()
        await server.wait_closed()
