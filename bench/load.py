"""The controller's side of a load client process (bench/sse_client.py)."""

import asyncio
import sys
from dataclasses import dataclass
from typing import Any

import orjson

from bench.processes import REPO_ROOT, read_cpu_seconds

JsonObject = dict[str, Any]

# Opening 10k streams through the service's checks takes a while on 2 cores.
COMMAND_TIMEOUT_SECONDS = 300.0


class ClientError(RuntimeError):
    """The load client answered a command with an error."""


@dataclass
class LoadClient:
    process: asyncio.subprocess.Process

    @classmethod
    async def start(cls) -> "LoadClient":
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.sse_client",
            cwd=REPO_ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        return read_cpu_seconds(self.pid)

    async def call(self, op: str, **arguments: Any) -> JsonObject:
        stdin, stdout = self.process.stdin, self.process.stdout
        if stdin is None or stdout is None:
            raise ClientError("the load client has no pipes")
        stdin.write(orjson.dumps({"op": op, **arguments}) + b"\n")
        await stdin.drain()
        line = await asyncio.wait_for(stdout.readline(), COMMAND_TIMEOUT_SECONDS)
        if not line:
            raise ClientError(f"the load client exited during {op}")
        answer: JsonObject = orjson.loads(line)
        if "error" in answer:
            raise ClientError(f"{op}: {answer['error']}")
        return answer

    async def open(
        self,
        port: int,
        targets: list[tuple[str, int]],
        headers: dict[str, str],
        *,
        frozen: bool = False,
        rcvbuf: int | None = None,
    ) -> JsonObject:
        return await self.call(
            "open",
            host="127.0.0.1",
            port=port,
            targets=targets,
            headers=headers,
            frozen=frozen,
            rcvbuf=rcvbuf,
        )

    async def window(self) -> JsonObject:
        return await self.call("window")

    async def wait_for_events(self, events: int, timeout: float) -> JsonObject:
        return await self.call("wait_for_events", events=events, timeout=timeout)

    async def wait_quiet(self, quiet: float, timeout: float) -> JsonObject:
        return await self.call("wait_quiet", quiet=quiet, timeout=timeout)

    async def wait_ended(self, timeout: float) -> JsonObject:
        return await self.call("wait_ended", timeout=timeout)

    async def close_all(self) -> JsonObject:
        return await self.call("close_all")

    async def stop(self) -> None:
        if self.process.returncode is None and self.process.stdin is not None:
            self.process.stdin.write(b'{"op": "exit"}\n')
            self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
