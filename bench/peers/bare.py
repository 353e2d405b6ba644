"""Peer `bare`: uvicorn + Starlette broadcasting frames from memory, no database.

The practical limit of this stack on this machine. A writer POSTs a payload
to `/publish/{run}`; the frame is encoded once and its bytes are appended to
every stream of that run, which sends whatever has piled up in one write,
as the service does. No heartbeat, no send timeout, no bound on a slow
client's queue: everything the service adds on top is left out.
"""

import asyncio
import collections
import datetime
import itertools
from collections.abc import AsyncIterator

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.peers.frames import RETRY_FRAME
from bench.peers.http import (
    EVENTS_PATH,
    argument_parser,
    event_stream,
    readyz,
    serve,
)

ORG_ID = "org_01jd8v0000000000000000bare"


class Subscriber:
    __slots__ = ("pending", "wakeup")

    def __init__(self) -> None:
        self.pending: collections.deque[bytes] = collections.deque()
        self.wakeup = asyncio.Event()


class Room:
    """The streams of one run and the run's next event number."""

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        self.numbers = itertools.count(1)

    def broadcast(self, run: str, payload: bytes) -> None:
        event_id = f"evt_{next(self.numbers):026d}"
        data = orjson.dumps(
            {
                "id": event_id,
                "run_id": run,
                "org_id": ORG_ID,
                "type": "phase_changed",
                "phase": "bench",
                "payload": orjson.Fragment(payload),
                "created_at": datetime.datetime.now(datetime.UTC),
            },
            option=orjson.OPT_UTC_Z,
        )
        frame = b"id: %s\nevent: phase_changed\ndata: %s\n\n" % (
            event_id.encode(),
            data,
        )
        for subscriber in self.subscribers:
            subscriber.pending.append(frame)
            subscriber.wakeup.set()


def create_app() -> Starlette:
    rooms: collections.defaultdict[str, Room] = collections.defaultdict(Room)

    async def follow(request: Request) -> Response:
        room = rooms[request.path_params["run"]]
        return event_stream(stream_room(room))

    async def publish(request: Request) -> Response:
        run = request.path_params["run"]
        rooms[run].broadcast(run, await request.body())
        return Response(b"")

    return Starlette(
        routes=[
            Route(EVENTS_PATH, follow),
            Route("/publish/{run}", publish, methods=["POST"]),
            Route("/readyz", readyz),
        ]
    )


async def stream_room(room: Room) -> AsyncIterator[bytes]:
    subscriber = Subscriber()
    room.subscribers.add(subscriber)
    try:
        yield RETRY_FRAME
        while True:
            await subscriber.wakeup.wait()
            subscriber.wakeup.clear()
            frames = b"".join(subscriber.pending)
            subscriber.pending.clear()
            yield frames
    finally:
        room.subscribers.discard(subscriber)


def main() -> None:
    args = argument_parser("python -m bench.peers.bare").parse_args()
    # The writer's connection idles while other systems take their turn.
    serve(create_app(), args, timeout_keep_alive=600)


if __name__ == "__main__":
    main()
