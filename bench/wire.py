"""Just enough HTTP/1.1 for the controller: readiness checks and publishing."""

import asyncio

HEAD_END = b"\r\n\r\n"


async def get_status(port: int, path: str, timeout: float = 2.0) -> int:
    """The status code of one GET on a fresh connection."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port), timeout
    )
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        line = await asyncio.wait_for(reader.readline(), timeout)
        return int(line.split()[1])
    finally:
        writer.close()


class KeepAliveConnection:
    """One persistent connection for POSTs answered with an empty or short body."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def post(self, path: str, body: bytes) -> int:
        """POST and read the answer; one retry on a fresh connection if the
        server closed the idle one (uvicorn's keep-alive timeout)."""
        try:
            return await self.post_once(path, body)
        except (asyncio.IncompleteReadError, ConnectionError):
            await self.close()
            return await self.post_once(path, body)

    async def post_once(self, path: str, body: bytes) -> int:
        if self.reader is None or self.writer is None:
            await self.connect()
        reader, writer = self.reader, self.writer
        if reader is None or writer is None:
            raise ConnectionError("not connected")
        writer.write(
            b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n%s"
            % (path.encode(), len(body), body)
        )
        head = await reader.readuntil(HEAD_END)
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length:
            await reader.readexactly(length)
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            self.reader = None
