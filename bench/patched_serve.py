"""`selftune-events serve` with measurement patches applied at import.

For ranking what to change in `app/` without changing it: each patch
removes or replaces one cost the profile pointed at, and bench/variants.py
measures the builds side by side. Run as a script (not `-m`), with
PYTHONPATH naming the tree of `app` to patch:

    python bench/patched_serve.py gc,lean serve --port 8123

Patches (comma-separated; `base` for none):

- `gc`: `gc.set_threshold(100_000, 50, 1000)`, so full collections stay off
  the hot path.
- `gclog`: log every generation-2 collection and its duration to stderr.
- `nosendtimer`: sends without the per-send timeout.
- `nowaketimer`: `follow_feed` waits without its per-wake `asyncio.timeout`
  (no heartbeat).
- `nometrics`: the per-chunk metrics become no-ops.
- `nopreping`: the query pool without `pool_pre_ping`.
- `lean`: the response sends chunks itself, with one helper task for
  `http.disconnect`; no task group, no send timeout, no heartbeat.

The builds without timers keep no heartbeat and no send timeout: they
measure a floor, not a shippable service.
"""

import asyncio
import contextlib
import gc
import sys
import time
import types
from collections.abc import Callable
from typing import Any

KNOWN = {"base", "gc", "gclog", "nosendtimer", "nowaketimer", "nometrics"}
KNOWN |= {"nopreping", "lean"}


class NoopMetric:
    def labels(self, *_args: Any, **_kwargs: Any) -> "NoopMetric":
        return self

    def inc(self, *_args: Any, **_kwargs: Any) -> None:
        return None

    def dec(self, *_args: Any, **_kwargs: Any) -> None:
        return None

    def observe(self, *_args: Any, **_kwargs: Any) -> None:
        return None


def log_full_collections() -> None:
    started: dict[int, float] = {}

    def callback(phase: str, info: dict[str, int]) -> None:
        generation = info["generation"]
        if phase == "start":
            started[generation] = time.perf_counter()
            return
        took_ms = (time.perf_counter() - started.get(generation, 0.0)) * 1000
        if generation == 2:
            sys.stderr.write(
                f"gc.collected generation=2 ms={took_ms:.1f} "
                f"collected={info['collected']}\n"
            )

    gc.callbacks.append(callback)


def send_without_timer(response: Any) -> None:
    async def send_plain(self: Any, send: Callable[..., Any], message: Any) -> None:
        try:
            await send(message)
        except BaseException:
            self._send_interrupted = True
            raise

    response._send_with_timeout = send_plain


def wait_without_timer() -> None:
    import app.streaming.stream as stream_module

    no_timer = types.SimpleNamespace(timeout=lambda _s: contextlib.nullcontext())
    setattr(stream_module, "asyncio", no_timer)  # noqa: B010


def silence_metrics() -> None:
    import app.metrics as metrics

    for name in (
        "EVENTS_SENT",
        "LIVE_EVENTS_SENT",
        "REPLAY_EVENTS_SENT",
        "COMMIT_TO_SEND_SECONDS",
    ):
        if hasattr(metrics, name):
            setattr(metrics, name, NoopMetric())


def pool_without_preping() -> None:
    import app.db.engine as engine_module

    original = getattr(engine_module, "create_async_engine")  # noqa: B009

    def create(*args: Any, **kwargs: Any) -> Any:
        kwargs["pool_pre_ping"] = False
        return original(*args, **kwargs)

    setattr(engine_module, "create_async_engine", create)  # noqa: B010


def lean_response(response: Any) -> None:
    async def call(self: Any, _scope: Any, receive: Any, send: Any) -> None:
        writer = asyncio.current_task()
        gone = asyncio.Event()

        async def watch_disconnect() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    if writer is not None:
                        writer.cancel()
                    return

        watcher = asyncio.create_task(watch_disconnect())
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            async for chunk in self.body_iterator:
                await send(
                    {"type": "http.response.body", "body": chunk, "more_body": True}
                )
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone.is_set() or writer is None:
                raise
            writer.uncancel()
        finally:
            watcher.cancel()
            self.stream.close(None)

    response.__call__ = call


def apply(patches: set[str]) -> None:
    unknown = patches - KNOWN
    if unknown:
        raise SystemExit(f"unknown patches: {', '.join(sorted(unknown))}")
    from app.streaming.response import RunEventsResponse

    if "gc" in patches:
        gc.set_threshold(100_000, 50, 1000)
    if "gclog" in patches:
        log_full_collections()
    if "nosendtimer" in patches:
        send_without_timer(RunEventsResponse)
    if "nowaketimer" in patches:
        wait_without_timer()
    if "nometrics" in patches:
        silence_metrics()
    if "nopreping" in patches:
        pool_without_preping()
    if "lean" in patches:
        lean_response(RunEventsResponse)


def main() -> None:
    patches = set(sys.argv[1].split(","))
    del sys.argv[1]
    apply(patches)

    from app.cli.main import main as serve_main

    serve_main()


if __name__ == "__main__":
    main()
