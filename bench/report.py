"""Results as files: JSON, a Markdown report, and PNG plots."""

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.processes import SYSTEMS

JsonObject = dict[str, Any]

MARKERS = {"service": "o", "bare": "s", "listen-per-client": "^", "polling": "D"}


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        text = f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return text + unit


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def phase_at(point: JsonObject, rate: float) -> JsonObject:
    for phase in point.get("phases", []):
        if phase["rate"] == rate:
            result: JsonObject = phase
            return result
    return {}


def fanout_table(fanout: list[JsonObject]) -> list[str]:
    rows = []
    for point in fanout:
        if "skipped" in point:
            rows.append(
                [point["system"], fmt(point["streams"]), "skipped: " + point["skipped"]]
                + [""] * 7
            )
            continue
        ten, one = phase_at(point, 10.0), phase_at(point, 1.0)
        lat = ten.get("latency_ms", {})
        top = point.get("max", {})
        best = ""
        if top.get("rate"):
            coalesced = next(
                (
                    s.get("events_per_write")
                    for s in top["steps"]
                    if s["rate"] == top["rate"]
                ),
                None,
            )
            best = (
                f"{fmt(top.get('deliveries_per_s'))} @ {fmt(top['rate'])}/s"
                f" ({fmt(coalesced)} events/write)"
            )
        elif top:
            best = "none sustained"
        rows.append(
            [
                point["system"],
                fmt(point["streams"]),
                " / ".join(fmt(lat.get(k)) for k in ("p50", "p99", "max")),
                fmt(one.get("latency_ms", {}).get("p99")),
                fmt(ten.get("cpu_us_per_delivery")),
                best or "–",
                fmt(point.get("rss_end_mb")),
                fmt(point.get("rss_per_stream_kb")),
                fmt(point.get("idle_cpu")),
                fmt(point.get("open_per_s")),
            ]
        )
    return table(
        [
            "system",
            "streams",
            "10/s latency p50 / p99 / max ms",
            "1/s p99 ms",
            "CPU µs per delivery at 10/s",
            "max sustained deliveries/s",
            "RSS MiB",
            "RSS/stream KiB",
            "idle CPU",
            "opens/s",
        ],
        rows,
    )


def database_table(rows: list[JsonObject]) -> list[str]:
    return table(
        [
            "system",
            "streams",
            "connections",
            "queries/s",
            "queries/event",
            "of which (per event)",
            "run_events reads/event",
            "rows read/event",
            "notifications received/event",
        ],
        [
            [
                r["system"],
                fmt(r["streams"]),
                fmt(r["connections"]),
                fmt(r["queries_per_s"]),
                fmt(r["queries_per_event"]),
                ", ".join(f"{k} {v}" for k, v in r["by_kind_per_event"].items()),
                fmt(r["reads_per_event"]),
                fmt(r["rows_per_event"]),
                fmt(r["notifications_per_event"]),
            ]
            for r in rows
        ],
    )


def many_runs_table(rows: list[JsonObject]) -> list[str]:
    return table(
        [
            "system",
            "runs",
            "streams",
            "events/s",
            "deliveries/s",
            "p50 / p99 / max ms",
            "server CPU",
            "reads/event",
        ],
        [
            [
                r["system"],
                fmt(r["runs"]),
                fmt(r["streams"]),
                fmt(r["achieved_rate"]),
                fmt(r["deliveries_per_s"]),
                " / ".join(fmt(r["latency_ms"].get(k)) for k in ("p50", "p99", "max")),
                fmt(r["server_cpu"]),
                fmt(r.get("db", {}).get("reads_per_event")),
            ]
            for r in rows
        ],
    )


def replay_table(replay: JsonObject) -> list[str]:
    ref = replay["reference"]
    rows = [
        [
            "asyncpg read + orjson (no server)",
            "1",
            fmt(ref["events_per_s"]),
            fmt(ref["mb_per_s"]),
            fmt(ref["seconds"]),
        ]
    ]
    for s in replay["systems"]:
        rows.append(
            [
                s["system"],
                fmt(s["clients"]),
                fmt(s["events_per_s"]),
                fmt(s["mb_per_s"]),
                fmt(s["seconds"]),
            ]
        )
    return table(
        ["reader", "clients", "events/s (all clients)", "MB/s", "seconds"], rows
    )


def writes_table(rows: list[JsonObject]) -> list[str]:
    return table(
        ["statement", "writers", "runs", "open streams", "events/s"],
        [
            [
                r["mode"],
                fmt(r["writers"]),
                fmt(r["runs"]),
                r["streams"],
                fmt(r["events_per_s"]),
            ]
            for r in rows
        ],
    )


def frozen_lines(frozen: JsonObject) -> list[str]:
    rows = []
    phases = (
        ("healthy only", "healthy"),
        ("one frozen client", "with_frozen"),
        ("healthy again", "healthy_again"),
    )
    for label, key in phases:
        phase = frozen[key]
        lat = phase["latency_ms"]
        rows.append(
            [
                label,
                " / ".join(fmt(lat.get(k)) for k in ("p50", "p99", "max")),
                fmt(phase["delivered_fraction"]),
                fmt(phase["rss_peak_mb"]),
            ]
        )
    reasons = ", ".join(f"{k} {v}" for k, v in frozen["close_reasons"].items())
    return [
        f"{frozen['streams']} healthy streams, {frozen['rate']} events/s of "
        f"{frozen['payload_bytes']} B payload, SEND_TIMEOUT_SECONDS "
        f"{frozen['send_timeout_seconds']}; frozen client dropped during its phase: "
        f"{'yes' if frozen['frozen_dropped'] else 'no'}"
        + (f" (streams closed: {reasons})" if reasons else "")
        + ".",
        "",
    ] + table(
        ["phase", "others' p50 / p99 / max ms", "delivered", "peak RSS MiB"], rows
    )


def notify_lines(notify: JsonObject) -> list[str]:
    lines = table(
        ["writers", "INSERT/s", "INSERT + NOTIFY/s", "NOTIFY share"],
        [
            [
                fmt(r["writers"]),
                fmt(r["plain_per_s"]),
                fmt(r["notify_per_s"]),
                fmt(r["notify_share"]),
            ]
            for r in notify["writers"]
        ],
    )
    rows = []
    for r in notify["listeners"]:
        if "skipped" in r:
            rows.append([fmt(r["listeners"]), "skipped: " + r["skipped"], "", ""])
            continue
        lat = r["latency_ms"]
        rows.append(
            [
                fmt(r["listeners"]),
                fmt(r["notify_per_s"]),
                fmt(r["received_per_s_per_listener"]),
                " / ".join(fmt(lat.get(k)) for k in ("p50", "p99", "max")),
            ]
        )
    return lines + table(
        [
            "listening sessions",
            "INSERT + NOTIFY/s (4 writers)",
            "received/s per session",
            "commit to notification p50 / p99 / max ms",
        ],
        rows,
    )


def profile_lines(profiles: list[JsonObject]) -> list[str]:
    lines: list[str] = []
    for profile in profiles:
        if "error" in profile:
            lines += [f"{profile['system']}: py-spy failed: {profile['error']}", ""]
            continue
        if "deliveries_per_s" in profile:
            load = (
                f"{profile['rate']} events/s, "
                f"{fmt(profile['deliveries_per_s'])} deliveries/s, "
                f"server CPU {profile['server_cpu']}"
            )
        else:
            load = f"{fmt(profile['events_per_s'])} events/s read"
        lines += [
            f"**{profile['system']}**, {profile['scenario']}: {load}; "
            f"{profile['samples']} samples (`{profile['stacks']}`).",
            "",
            "Self time by library: "
            + ", ".join(f"{k} {v}%" for k, v in profile["components"].items()),
            "",
        ]
        lines += table(
            ["inclusive %", "function", "file"],
            [
                [fmt(f["percent"]), f"`{f['function']}`", f["file"]]
                for f in profile["inclusive"][:15]
            ],
        )
        lines += table(
            ["self %", "function", "file"],
            [
                [fmt(f["percent"]), f"`{f['function']}`", f["file"]]
                for f in profile["self"][:15]
            ],
        )
    return lines


def render_markdown(results: JsonObject) -> str:
    meta = results["meta"]
    lines = [
        f"# Benchmark results ({meta['mode']})",
        "",
        f"`{meta['command']}` on {meta['started_at']}, commit {meta['commit']}"
        f"{' (uncommitted changes)' if meta.get('dirty') else ''}; "
        f"{meta['cpus']} CPUs, PostgreSQL {meta['postgres']}, Python {meta['python']}; "
        f"took {meta.get('seconds', '?')} s. Load clients: {meta['client']}.",
        "",
    ]
    if results.get("targets"):
        lines += ["## Targets", ""]
        lines += table(
            ["target", "measured", "met"],
            [
                [
                    t["target"],
                    t["measured"],
                    {True: "yes", False: "**no**", None: "–"}[t["met"]],
                ]
                for t in results["targets"]
            ],
        )
    if "floor" in results:
        f = results["floor"]["latency_ms"]
        lines += [
            "## LISTEN floor",
            "",
            f"Commit to notification on a bare asyncpg session, nothing else running: "
            f"p50 {fmt(f.get('p50'))} ms, p99 {fmt(f.get('p99'))} ms, "
            f"max {fmt(f.get('max'))} ms ({f.get('n')} events).",
            "",
        ]
    sections: list[tuple[str, str, Callable[[Any], list[str]]]] = [
        ("fanout", "Fan-out on one run", fanout_table),
        ("database_cost", "Database cost (10 events/s phase)", database_table),
        ("many_runs", "Many runs", many_runs_table),
        ("replay", "Replay", replay_table),
        ("writes", "Writes", writes_table),
        ("frozen", "A frozen client", frozen_lines),
        ("notify", "NOTIFY throughput and listening sessions", notify_lines),
        ("profiles", "Profiles (py-spy)", profile_lines),
    ]
    for key, title, render in sections:
        if results.get(key):
            lines += [f"## {title}", ""] + render(results[key])
    if results.get("notes"):
        lines += ["## Notes", ""] + [f"- {note}" for note in results["notes"]] + [""]
    return "\n".join(lines)


def plot_fanout(fanout: list[JsonObject], results_dir: Path, prefix: str) -> list[str]:
    """Latency, deliveries/s and RSS against streams; the PNG names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(system: str, pick: Any) -> tuple[list[int], list[float]]:
        xs, ys = [], []
        for point in fanout:
            if point["system"] == system and "phases" in point:
                value = pick(point)
                if value is not None:
                    xs.append(point["streams"])
                    ys.append(value)
        return xs, ys

    written = []
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for system in SYSTEMS:
        for key, style in (("p50", ":"), ("p99", "-")):
            xs, ys = series(
                system, lambda p, k=key: phase_at(p, 10.0).get("latency_ms", {}).get(k)
            )
            if xs:
                axis.plot(
                    xs, ys, style, marker=MARKERS[system], label=f"{system} {key}"
                )
    finish(axis, "commit to client, ms", "Latency at 10 events/s", log_y=True)
    written.append(save(figure, results_dir / f"{prefix}-latency.png"))

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for system in SYSTEMS:
        xs, ys = series(system, lambda p: p.get("max", {}).get("deliveries_per_s"))
        if xs:
            axis.plot(
                xs, ys, "-", marker=MARKERS[system], label=f"{system}, max sustained"
            )
        xs, ys = series(system, lambda p: phase_at(p, 10.0).get("deliveries_per_s"))
        if xs:
            axis.plot(
                xs, ys, ":", marker=MARKERS[system], label=f"{system}, at 10 events/s"
            )
    finish(axis, "deliveries/s", "Deliveries per second", log_y=True)
    written.append(save(figure, results_dir / f"{prefix}-deliveries.png"))

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for system in SYSTEMS:
        xs, ys = series(system, lambda p: p.get("rss_end_mb"))
        if xs:
            axis.plot(xs, ys, "-", marker=MARKERS[system], label=system)
    finish(axis, "server RSS, MiB", "Server memory", log_y=False)
    written.append(save(figure, results_dir / f"{prefix}-rss.png"))
    return written


def finish(axis: Any, ylabel: str, title: str, *, log_y: bool) -> None:
    """Axes, legend and grid shared by every plot against streams (log x)."""
    axis.set(
        xscale="log",
        yscale="log" if log_y else "linear",
        xlabel="streams on one run",
        ylabel=ylabel,
        title=title,
    )
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=7)
    axis.grid(True, which="both", alpha=0.3)


def save(figure: Any, path: Path) -> str:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return path.name


def write_results(
    results: JsonObject, results_dir: Path, prefix: str, *, plots: bool = True
) -> list[Path]:
    """Write `<prefix>.json`, `<prefix>.md` and the plots; the paths written."""
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path = results_dir / f"{prefix}.json"
    temporary = results_dir / f"{prefix}.json.tmp"
    temporary.write_text(json.dumps(results, indent=1, default=str) + "\n")
    os.replace(temporary, json_path)
    written = [json_path]
    if plots and results.get("fanout"):
        results["plots"] = plot_fanout(results["fanout"], results_dir, prefix)
        written += [results_dir / name for name in results["plots"]]
    markdown = render_markdown(results)
    if results.get("plots"):
        markdown += "\n" + "\n".join(f"![{n}]({n})" for n in results["plots"]) + "\n"
    md_path = results_dir / f"{prefix}.md"
    md_path.write_text(markdown)
    written.append(md_path)
    return written
