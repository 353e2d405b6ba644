"""What a LISTEN session receives on the events channel, to await in tests."""

import asyncio
from dataclasses import dataclass, field

CHANNEL = "selftune_run_events"

# A notification normally arrives within milliseconds of the commit.
NOTIFY_TIMEOUT_SECONDS = 5.0


@dataclass
class Notifications:
    """Payloads received on the events channel, in arrival order."""

    queue: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    async def receive_until(self, last: str) -> list[str]:
        """Every payload received up to and including `last`."""
        received: list[str] = []
        async with asyncio.timeout(NOTIFY_TIMEOUT_SECONDS):
            while not received or received[-1] != last:
                received.append(await self.queue.get())
        return received
