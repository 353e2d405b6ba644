"""`selftune-events serve` with measurement patches applied at import.

For ranking what to change in `app/` without changing it: each patch
removes or replaces one cost the profile pointed at, and bench/variants.py
measures the builds side by side. Run as a script (not `-m`), with
PYTHONPATH naming the tree of `app` to patch:

    python bench/patched_serve.py gcdefault,gclog serve --port 8123

Patches (comma-separated; `base` for none):

- `gcdefault`: CPython's default collection thresholds, undoing the ones
  `create_app_from_environment` sets, to show what they buy.
- `gclog`: log every generation-2 collection and its duration to stderr.
- `nometrics`: the metrics on the delivery path become no-ops.

The patches that ranked the earlier changes (no per-send timer, no per-wake
timer, a lean response, no pool pre-ping) describe code that has since been
replaced by the supervisor (app/streaming/supervisor.py) and the checkout
check (app/db/engine.py); `git log bench/patched_serve.py` has them.
"""

import gc
import sys
import time
from typing import Any

KNOWN = {"base", "gcdefault", "gclog", "nometrics"}


class NoopMetric:
    def labels(self, *_args: Any, **_kwargs: Any) -> "NoopMetric":
        return self

    def inc(self, *_args: Any, **_kwargs: Any) -> None:
        return None

    def dec(self, *_args: Any, **_kwargs: Any) -> None:
        return None

    def observe(self, *_args: Any, **_kwargs: Any) -> None:
        return None


def undo_threshold_after_start() -> None:
    import app.main as main_module

    default = gc.get_threshold()
    create = main_module.create_app_from_environment

    def create_with_default_threshold() -> Any:
        app = create()
        gc.set_threshold(*default)
        return app

    setattr(  # noqa: B010
        main_module, "create_app_from_environment", create_with_default_threshold
    )


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


def silence_metrics() -> None:
    import app.metrics as metrics

    for name in (
        "EVENTS_SENT",
        "LIVE_EVENTS_SENT",
        "REPLAY_EVENTS_SENT",
        "COMMIT_TO_FANOUT_SECONDS",
    ):
        if hasattr(metrics, name):
            setattr(metrics, name, NoopMetric())


def apply(patches: set[str]) -> None:
    unknown = patches - KNOWN
    if unknown:
        raise SystemExit(f"unknown patches: {', '.join(sorted(unknown))}")
    if "gcdefault" in patches:
        undo_threshold_after_start()
    if "gclog" in patches:
        log_full_collections()
    if "nometrics" in patches:
        silence_metrics()


def main() -> None:
    patches = set(sys.argv[1].split(","))
    del sys.argv[1]
    apply(patches)

    from app.cli.main import main as serve_main

    serve_main()


if __name__ == "__main__":
    main()
