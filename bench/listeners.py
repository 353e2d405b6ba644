"""A process of LISTEN sessions, standing in for the replicas' listeners.

Kept out of the writers' process, so that reading notifications does not
slow the writes being measured. Run as `python -m bench.listeners DSN`;
stdin takes `grow N`, `reset` and `report` lines, and `report` answers with
one JSON line: notifications received and their commit-to-arrival times
(the payload is the writer's `time.monotonic()`).
"""

import asyncio
import sys
import time
from typing import Any

import asyncpg
import orjson

from bench.stats import summarise_latencies

CHANNEL = "bench_notify"
APPLICATION_NAME = "bench-floor"


class Sessions:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.connections: list[Any] = []
        self.latencies: list[float] = []
        self.received = 0

    def on_notification(self, _conn: Any, _pid: int, _ch: str, payload: str) -> None:
        self.received += 1
        self.latencies.append(time.monotonic() - float(payload))

    async def grow_to(self, count: int) -> None:
        while len(self.connections) < count:
            conn = await asyncpg.connect(
                self.dsn, server_settings={"application_name": APPLICATION_NAME}
            )
            await conn.add_listener(CHANNEL, self.on_notification)
            self.connections.append(conn)

    def report(self) -> dict[str, object]:
        result = {
            "sessions": len(self.connections),
            "received": self.received,
            "latency_ms": summarise_latencies(self.latencies),
        }
        self.latencies = []
        self.received = 0
        return result


async def serve(dsn: str) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    sessions = Sessions(dsn)
    while line := await reader.readline():
        command, _, argument = line.decode().strip().partition(" ")
        answer: dict[str, object] = {}
        if command == "grow":
            await sessions.grow_to(int(argument))
            answer = {"sessions": len(sessions.connections)}
        elif command == "report":
            answer = sessions.report()
        sys.stdout.buffer.write(orjson.dumps(answer) + b"\n")
        sys.stdout.buffer.flush()
    for conn in sessions.connections:
        await conn.close()


def main() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        asyncio.run(serve(sys.argv[1]))
    else:
        uvloop.run(serve(sys.argv[1]))


if __name__ == "__main__":
    main()
