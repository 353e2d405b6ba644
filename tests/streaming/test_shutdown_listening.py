"""After SIGTERM, `serve` refuses new connections instead of queueing them."""

import asyncio
import contextlib
import signal
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from tests.fixtures.server import run_serve_process

SHUTDOWN_SEEN_SECONDS = 10.0
ANSWER_SECONDS = 3.0


def hold_request_open(host: str, port: int) -> socket.socket:
    """A request whose body never finishes: uvicorn waits for it at shutdown,
    up to its graceful-shutdown timeout."""
    held = socket.create_connection((host, port))
    held.sendall(
        b"POST /api/v1/improve-runs/run_x/read-tokens HTTP/1.1\r\n"
        b"Host: test\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    return held


def try_new_connection(host: str, port: int) -> str:
    """What a client arriving now meets: refused, an answer, or silence."""
    try:
        probe = socket.create_connection((host, port), timeout=ANSWER_SECONDS)
    except ConnectionRefusedError:
        return "refused"
    with probe:
        probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        try:
            answer = probe.recv(16)
        except TimeoutError:
            return "accepted, then no answer"
        except ConnectionResetError:
            return "accepted, then reset"
    return "answered" if answer.startswith(b"HTTP/") else "accepted, then closed"


async def test_serve_refuses_new_connections_once_shutting_down(
    own_database: Callable[[], Awaitable[str]],
) -> None:
    """While serve drains after SIGTERM, a new client must be refused at
    once, so that it (or a proxy) goes to another instance, rather than be
    accepted by the kernel and left hanging until the process exits.

    Broke when serve started passing a pre-bound socket's fd to uvicorn: a
    connection made during the drain got no answer, then a reset at exit."""
    database_url = await own_database()

    async with run_serve_process(database_url) as serve:
        url = urlsplit(serve.base_url)
        host, port = url.hostname or "127.0.0.1", url.port or 0
        held = hold_request_open(host, port)
        serve.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(SHUTDOWN_SEEN_SECONDS):
            while "Waiting for connections to close" not in serve.logs():
                await asyncio.sleep(0.02)
        outcome = await asyncio.to_thread(try_new_connection, host, port)
        with contextlib.suppress(OSError):
            held.close()
        await asyncio.to_thread(serve.process.wait, 15)

    assert outcome == "refused"
