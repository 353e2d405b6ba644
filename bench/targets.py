"""Issue 4's targets, checked against one run's results (ratios from that run)."""

from typing import Any

from bench.processes import BARE, SERVICE
from bench.stats import ratio

JsonObject = dict[str, Any]

POOL_PLUS_LISTENER = 11
FANOUT_STREAMS = 1000


def find_point(
    fanout: list[JsonObject], system: str, streams: int
) -> JsonObject | None:
    for point in fanout:
        if (
            point["system"] == system
            and point["streams"] == streams
            and "phases" in point
        ):
            return point
    return None


def check(target: str, measured: str, met: bool | None) -> JsonObject:
    return {"target": target, "measured": measured, "met": met}


def evaluate_targets(results: JsonObject) -> list[JsonObject]:
    checks: list[JsonObject] = []
    fanout: list[JsonObject] = results.get("fanout", [])
    if fanout:
        checks += check_fanout(fanout, results.get("floor"))
        checks += check_database(results.get("database_cost", []))
    if "replay" in results:
        checks += check_replay(results["replay"])
    if "writes" in results:
        checks += check_writes(results["writes"])
    if "frozen" in results:
        checks += check_frozen(results["frozen"])
    return checks


def check_fanout(
    fanout: list[JsonObject], floor: JsonObject | None
) -> list[JsonObject]:
    checks = []
    service = find_point(fanout, SERVICE, FANOUT_STREAMS)
    bare = find_point(fanout, BARE, FANOUT_STREAMS)
    if service and bare and "max" in service and "max" in bare:
        share = ratio(
            service["max"]["deliveries_per_s"], bare["max"]["deliveries_per_s"]
        )
        checks.append(
            check(
                "fan-out deliveries/s at 1k streams >= 0.8 x bare",
                f"{service['max']['deliveries_per_s']} vs "
                f"{bare['max']['deliveries_per_s']} = {share}",
                share is not None and share >= 0.8,
            )
        )

    largest = max((p["streams"] for p in fanout if p["system"] == SERVICE), default=0)
    biggest = find_point(fanout, SERVICE, largest)
    biggest_bare = find_point(fanout, BARE, largest)
    if biggest:
        held = biggest.get("held", biggest["open"]["opened"])
        refused = biggest["open"]["failed"]
        checks.append(
            check(
                "10k concurrent streams in one process",
                f"{held} of {largest} held; {refused} refused at first "
                f"(statuses {biggest['open']['statuses']}), then retried",
                held == largest and largest >= 10_000,
            )
        )
    if biggest and biggest_bare:
        per_stream = ratio(
            biggest["rss_per_stream_kb"], biggest_bare["rss_per_stream_kb"]
        )
        checks.append(
            check(
                f"RSS per stream <= 2 x bare (at {largest} streams)",
                f"{biggest['rss_per_stream_kb']} KiB vs "
                f"{biggest_bare['rss_per_stream_kb']} KiB = {per_stream}",
                per_stream is not None and per_stream <= 2.0,
            )
        )

    if service:
        ten = next((p for p in service["phases"] if p["rate"] == 10.0), None)
        floor_p99 = (floor or {}).get("latency_ms", {}).get("p99")
        p99 = ten["latency_ms"].get("p99") if ten else None
        if p99 is not None:
            checks.append(
                check(
                    "p99 at 1k streams, 10 events/s <= 50 ms",
                    f"{p99} ms",
                    p99 <= 50,
                )
            )
        if p99 is not None and floor_p99 is not None:
            checks.append(
                check(
                    "p99 at 1k streams, 10 events/s <= LISTEN floor p99 + 25 ms",
                    f"{p99} ms vs floor {floor_p99} ms + 25",
                    p99 <= floor_p99 + 25,
                )
            )
    return checks


def check_database(rows: list[JsonObject]) -> list[JsonObject]:
    service = [r for r in rows if r["system"] == SERVICE]
    if not service:
        return []
    connections = sorted({r["connections"] for r in service})
    reads = [r["reads_per_event"] for r in service]
    return [
        check(
            "database connections constant in streams (pool + listener)",
            f"{connections} at {[r['streams'] for r in service]} streams",
            len(connections) == 1 and connections[0] <= POOL_PLUS_LISTENER,
        ),
        check(
            "one read per notification per run per process",
            f"reads per event {reads}",
            all(r <= 1.05 for r in reads),
        ),
    ]


def check_replay(replay: JsonObject) -> list[JsonObject]:
    one = next(
        (s for s in replay["systems"] if s["system"] == SERVICE and s["clients"] == 1),
        None,
    )
    if one is None:
        return []
    reference = replay["reference"]["events_per_s"]
    share = ratio(one["events_per_s"], reference)
    return [
        check(
            "replay >= 50k events/s, one client",
            f"{one['events_per_s']}/s",
            one["events_per_s"] >= 50_000,
        ),
        check(
            "replay >= 0.5 x asyncpg read + orjson",
            f"{one['events_per_s']} vs {reference} = {share}",
            share is not None and share >= 0.5,
        ),
    ]


def find_write(
    rows: list[JsonObject], mode: str, writers: int, streams: str
) -> float | None:
    for row in rows:
        if (
            row["mode"] == mode
            and row["writers"] == writers
            and row["streams"] == streams
            and row["runs"] == writers
        ):
            value: float = row["events_per_s"]
            return value
    return None


def check_writes(rows: list[JsonObject]) -> list[JsonObject]:
    checks = []
    stream_labels = sorted({r["streams"] for r in rows if r["streams"] != "none"})
    for writers in (1, 4):
        publish = find_write(rows, "publish", writers, "none")
        plain = find_write(rows, "plain_notify", writers, "none")
        share = ratio(publish, plain)
        checks.append(
            check(
                f"publish INSERT >= 0.7 x plain INSERT + NOTIFY ({writers} writers)",
                f"{publish} vs {plain} = {share}",
                share is not None and share >= 0.7,
            )
        )
        for label in stream_labels:
            loaded = find_write(rows, "publish", writers, label)
            slowdown = None if loaded is None or not publish else 1 - loaded / publish
            checks.append(
                check(
                    f"streams slow writes by <= 10 % ({writers} writers, {label})",
                    f"{loaded} vs {publish}: "
                    + (f"{slowdown:.1%} slower" if slowdown is not None else "n/a"),
                    slowdown is not None and slowdown <= 0.10,
                )
            )
    return checks


def check_frozen(frozen: JsonObject) -> list[JsonObject]:
    change = frozen["p99_change"]
    return [
        check(
            "a frozen client changes the others' p99 by <= 10 %",
            f"healthy {frozen['healthy_p99_ms']} -> "
            f"{frozen['with_frozen']['latency_ms'].get('p99')} ms"
            + (f" ({change:+.0%})" if change is not None else ""),
            change is not None and abs(change) <= 0.10,
        ),
        check(
            "a frozen client adds <= 64 MiB",
            f"{frozen['rss_added_mb']} MiB; dropped by the send timeout: "
            f"{frozen['frozen_dropped']}",
            frozen["rss_added_mb"] <= 64,
        ),
    ]
