"""Prometheus metrics, safe with several worker processes.

With `serve --workers N` each worker writes its samples to files under
PROMETHEUS_MULTIPROC_DIR (serve sets one up) and /metrics merges them; with
one process the default registry serves directly.
"""

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

STREAMS_OPEN = Gauge(
    "selftune_streams_open",
    "Event streams open now.",
    multiprocess_mode="livesum",
)
STREAMS_OPENED = Counter("selftune_streams_opened_total", "Event streams opened.")
STREAMS_CLOSED = Counter(
    "selftune_streams_closed_total",
    "Event streams closed, by reason (terminal, client_gone, slow_client, "
    "shutdown, database_unavailable).",
    ["reason"],
)
EVENTS_SENT = Counter(
    "selftune_events_sent_total",
    "Events written to streams, read from the database (replay, catch-up) "
    "or handed over by the live feed.",
    ["source"],
)
# Children bound once: labels() takes a lock and a dict lookup per call, and
# these are counted for every chunk written to every stream.
LIVE_EVENTS_SENT = EVENTS_SENT.labels("live")
REPLAY_EVENTS_SENT = EVENTS_SENT.labels("replay")
COMMIT_TO_FANOUT_SECONDS = Histogram(
    "selftune_commit_to_fanout_seconds",
    "Time from an event's commit until the process's feed hands it to the "
    "run's live streams; one sample per read.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LISTENER_CONNECTED = Gauge(
    "selftune_listener_connected",
    "1 while the process's LISTEN session is connected.",
    multiprocess_mode="livesum",
)
LISTENER_RECONNECTS = Counter(
    "selftune_listener_reconnects_total", "Times the LISTEN session was re-established."
)
NOTIFICATIONS = Counter(
    "selftune_notifications_total", "Notifications received on the LISTEN session."
)
FEED_READS = Counter(
    "selftune_feed_reads_total", "Pages of live events read by per-run feeds."
)
POOL_CHECKED_OUT = Gauge(
    "selftune_db_pool_checked_out",
    "Query connections lent out of the pool now.",
    multiprocess_mode="livesum",
)
REQUESTS_REJECTED = Counter(
    "selftune_requests_rejected_total",
    "Requests answered with an error before any stream, by status.",
    ["status"],
)


def render_metrics() -> tuple[bytes, str]:
    """The exposition text of every worker's metrics, and its content type."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
