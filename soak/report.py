"""What the clients received, held against what the database committed."""

import statistics
import uuid
from collections import Counter
from dataclasses import dataclass, field

import asyncpg

from app.ids import EVENT_PREFIX, format_id
from soak.clients import Client, Follow
from soak.faults import FaultLog, Sample
from soak.load import WriteStats

# What the server logs say about the faults, counted across both instances.
SERVER_LOG_EVENTS = (
    "stream.opened",
    "stream.send_timed_out",
    "listener.lost",
    "listener.reconnected",
    "feed.read_failed",
    "listener.failed",
)


@dataclass
class Tally:
    follows: int = 0
    completed: int = 0
    connections: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    foreign: int = 0

    @property
    def is_clean(self) -> bool:
        problems = self.lost + self.duplicated + self.out_of_order + self.foreign
        return problems == 0 and self.completed == self.follows


def tally_follow(follow: Follow, committed: list[str], tally: Tally) -> None:
    """Count one follow's faults against its run's committed ids.

    Lost counts the committed events up to the furthest one received that
    never arrived, so a follow cut off by the deadline is judged fairly.
    """
    position = {event_id: index for index, event_id in enumerate(committed)}
    known = [position[event_id] for event_id in follow.received if event_id in position]
    reached = max(known, default=-1)
    received = set(follow.received)

    tally.follows += 1
    tally.completed += follow.completed
    tally.connections += follow.connections
    tally.delivered += len(follow.received)
    tally.foreign += len(follow.received) - len(known)
    tally.duplicated += len(follow.received) - len(received)
    tally.lost += sum(event_id not in received for event_id in committed[: reached + 1])
    tally.out_of_order += sum(
        later < earlier for earlier, later in zip(known, known[1:], strict=False)
    )


async def tally_clients(conn: asyncpg.Connection, clients: list[Client]) -> Tally:
    committed: dict[uuid.UUID, list[str]] = {}
    tally = Tally()
    for client in clients:
        for follow in client.follows:
            if follow.run_id not in committed:
                rows = await conn.fetch(
                    "SELECT id FROM run_events WHERE run_id = $1 ORDER BY seq",
                    follow.run_id,
                )
                committed[follow.run_id] = [
                    format_id(EVENT_PREFIX, row["id"]) for row in rows
                ]
            tally_follow(follow, committed[follow.run_id], tally)
    return tally


@dataclass
class Report:
    minutes: float
    behind_nginx: bool
    slots: int
    clients: list[Client]
    writes: WriteStats
    faults: FaultLog
    samples: list[Sample]
    tally: Tally
    server_log: Counter[str] = field(default_factory=Counter)
    counters: Counter[str] = field(default_factory=Counter)

    @property
    def is_clean(self) -> bool:
        return self.tally.is_clean and not self.writes.errors

    def lines(self) -> list[str]:
        return [
            *self.summary_lines(),
            *self.client_lines(),
            *self.sample_lines(),
            f"verdict: {'PASS' if self.is_clean else 'FAIL'}",
        ]

    def summary_lines(self) -> list[str]:
        writes, tally = self.writes, self.tally
        latencies = sorted(writes.latencies) or [0.0]
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, round(0.99 * len(latencies)))]
        front = "nginx in front" if self.behind_nginx else "clients pick one"
        return [
            f"soak: {self.minutes:g} min, 2 serve instances ({front}),"
            f" {self.slots} run slots, {len(self.clients)} clients",
            f"events committed: {writes.committed + writes.runs_ended}"
            f" ({writes.runs_ended} runs ended);"
            f" write p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms;"
            f" writer errors: {format_counter(writes.errors)};"
            f" refused after a run's end (expected): {writes.refused_after_end}",
            f"faults injected: {format_counter(self.faults.counts)};"
            f" SIGTERM exits took {format_seconds(self.faults.exit_seconds)};"
            f" fault failures: {format_counter(self.faults.failures)}",
            f"server logs: {format_counter(self.server_log)}",
            "instance metrics at the end (since each one's last start): "
            + format_counter(self.counters),
            f"streams: {tally.follows} follows, {tally.completed} reached their"
            f" terminal event, {tally.connections} connections"
            f" ({tally.connections - tally.follows} resumes),"
            f" {tally.delivered} events delivered",
            f"LOST {tally.lost}  DUPLICATED {tally.duplicated}"
            f"  OUT-OF-ORDER {tally.out_of_order}  FOREIGN {tally.foreign}",
        ]

    def client_lines(self) -> list[str]:
        errors: Counter[str] = Counter()
        for client in self.clients:
            errors.update(client.errors)
        resets = sum(client.resets for client in self.clients)
        return [
            f"client-side interruptions: resets by us {resets};"
            f" others {format_counter(errors)}"
        ]

    def sample_lines(self) -> list[str]:
        lines = [
            "samples (t, RSS MB per instance, DB sessions per application_name,"
            " NOTIFY queue usage, frames received):"
        ]
        for sample in self.samples:
            rss = " ".join(
                f"{name}={'down' if mb is None else f'{mb:.0f}'}"
                for name, mb in sample.rss_megabytes.items()
            )
            sessions = " ".join(
                f"{name or '?'}={count}" for name, count in sample.sessions.items()
            )
            lines.append(
                f"  t={sample.elapsed_seconds:5.0f}s  rss[{rss}]  sessions[{sessions}]"
                f"  queue={sample.queue_usage:g}  frames={sample.frames}"
            )
        return lines


def format_counter(counter: Counter[str]) -> str:
    if not counter:
        return "none"
    return ", ".join(f"{name}={count}" for name, count in sorted(counter.items()))


def format_seconds(values: list[float]) -> str:
    if not values:
        return "n/a"
    return "/".join(f"{value:.1f}s" for value in values)
