"""Micro-benchmark of the wire encoder: microseconds per row of `encode_event`.

    uv run python -m bench.encode [--baseline REV] [--rounds N]

Rows come from PostgreSQL, so ids and payload text are what asyncpg hands the
service: the simulator's events (app/simulation.py), the replay scenario's
rows (bench/replay.py) and one large payload. Each round reads the rows anew
and encodes each once, as a replay does; the best round counts. The peers'
plain orjson encoding (bench/peers/frames.py) is timed beside it. With
`--baseline`, `app/` as committed at REV encodes the same rows in a second
process, and the frames of both are compared byte for byte.
"""

import argparse
import asyncio
import datetime
import gc
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from bench.database import DEFAULT_POSTGRES_URL

ROOT = Path(__file__).resolve().parent.parent

ROWS_PER_SET = {"simulator": 2_000, "replay": 2_000, "large payload": 200}
ROUNDS = 15

# The rows as app.db.events reads them: the same columns in the same order,
# built from arrays so that no table is needed.
SELECT_ROWS = """
SELECT id, run_id, org_id, seq, type, status, phase, candidate_id, proposal_id,
       payload_text::jsonb AS payload, created_at
FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::bigint[], $5::text[],
            $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
            $11::timestamptz[])
    AS row_values(id, run_id, org_id, seq, type, status, phase, candidate_id,
                  proposal_id, payload_text, created_at)
ORDER BY seq
"""

COLUMNS = (
    "id",
    "run_id",
    "org_id",
    "seq",
    "type",
    "status",
    "phase",
    "candidate_id",
    "proposal_id",
    "payload",
    "created_at",
)

Row = dict[str, Any]
Encode = Callable[[Any], Any]


def simulator_rows(count: int, rng: random.Random) -> list[Row]:
    """Runs of every outcome, as `simulate` publishes them."""
    from app.simulation import Outcome, build_lifecycle

    rows: list[Row] = []
    while len(rows) < count:
        for outcome in Outcome:
            rows += [
                {
                    "type": event.type,
                    "status": event.status,
                    "phase": event.phase,
                    "candidate_id": event.candidate_id,
                    "proposal_id": event.proposal_id,
                    "payload": event.payload,
                }
                for event in build_lifecycle(outcome, rng=rng)
            ]
    return rows[:count]


def replay_rows(count: int) -> list[Row]:
    """The rows the replay scenario seeds (bench/replay.py, SEED_BATCH)."""
    return [
        {
            "type": "phase_changed",
            "status": None,
            "phase": "replay",
            "candidate_id": None,
            "proposal_id": None,
            "payload": {"i": index, "note": "a candidate was scored on the eval set"},
        }
        for index in range(1, count + 1)
    ]


def large_payload_rows(count: int, rng: random.Random) -> list[Row]:
    """A full evaluation report per event, about 40 KB: separators, escaped
    quotes and typographic punctuation inside its strings."""
    cases = [
        {
            "case": f"case-{index:03}",
            "passed": rng.random() > 0.3,
            "score": round(rng.random(), 4),
            "output": (
                f"Step {index}: opened the branch, ran the tests: "
                f'{rng.randint(0, 9)} failures, reviewer said "ok" '
                "\u2014 it\u2019s the retry guidance again"
            ),
            "tags": ["retry", "branch, pull request"],
        }
        for index in range(160)
    ]
    return [
        {
            "type": "candidate_persisted",
            "status": None,
            "phase": None,
            "candidate_id": f"cand_{index:026}",
            "proposal_id": None,
            "payload": {"revision": index, "cases": cases},
        }
        for index in range(count)
    ]


def build_row_sets(seed: int) -> dict[str, list[Row]]:
    rng = random.Random(seed)
    sets = {
        "simulator": simulator_rows(ROWS_PER_SET["simulator"], rng),
        "replay": replay_rows(ROWS_PER_SET["replay"]),
        "large payload": large_payload_rows(ROWS_PER_SET["large payload"], rng),
    }
    started = datetime.datetime(2026, 4, 17, 10, tzinfo=datetime.UTC)
    run_id = uuid.UUID(int=rng.getrandbits(128))
    org_id = uuid.UUID(int=rng.getrandbits(128))
    for rows in sets.values():
        for seq, row in enumerate(rows, start=1):
            row["id"] = str(uuid.UUID(int=rng.getrandbits(128)))
            row["run_id"], row["org_id"], row["seq"] = str(run_id), str(org_id), seq
            created_at = started + datetime.timedelta(milliseconds=seq * 37)
            row["created_at"] = created_at.isoformat()
            # As app.db.events.publish_event sends it; PostgreSQL re-prints it.
            if row["payload"] is not None:
                row["payload"] = json.dumps(row["payload"], ensure_ascii=False)
    return sets


async def set_jsonb_codec(conn: Any) -> None:
    # What app/db/engine.py gets from SQLAlchemy's asyncpg dialect with
    # json_deserializer=str: jsonb in binary form, its version byte dropped.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda text: b"\x01" + text.encode(),
        decoder=lambda data: data[1:].decode(),
        schema="pg_catalog",
        format="binary",
    )


async def fetch_rows(conn: Any, rows: list[Row]) -> list[Any]:
    arrays = [[row[column] for row in rows] for column in COLUMNS]
    arrays[0:3] = [[uuid.UUID(value) for value in array] for array in arrays[0:3]]
    arrays[10] = [datetime.datetime.fromisoformat(value) for value in arrays[10]]
    records: list[Any] = await conn.fetch(SELECT_ROWS, *arrays)
    return records


async def measure(
    postgres_url: str, sets: dict[str, list[Row]], rounds: int
) -> dict[str, Any]:
    """Best microseconds per row for each set and encoder, and a digest of
    the service's frames."""
    from app.streaming.sse import encode_event
    from bench.peers.frames import encode_row

    encoders: dict[str, Encode] = {"service": encode_event, "peers": encode_row}
    conn = await asyncpg.connect(postgres_url)
    try:
        await set_jsonb_codec(conn)
        results: dict[str, Any] = {}
        for name, rows in sets.items():
            best = {encoder: float("inf") for encoder in encoders}
            for _ in range(rounds):
                for encoder, encode in encoders.items():
                    # Fresh records each time: asyncpg's UUID caches its
                    # integer, and a replay meets every row only once.
                    records = await fetch_rows(conn, rows)
                    best[encoder] = min(best[encoder], time_encoding(encode, records))
            frames = [encode_event(record).frame for record in records]
            results[name] = {
                "rows": len(rows),
                "frame_bytes": sum(len(frame) for frame in frames) // len(frames),
                "us_per_row": best,
                "frames_sha256": hashlib.sha256(b"".join(frames)).hexdigest(),
            }
    finally:
        await conn.close()
    return results


def time_encoding(encode: Encode, records: list[Any]) -> float:
    # As timeit does: a collection landing in one round and not another
    # would say more about the heap than about the encoder.
    gc.disable()
    try:
        started = time.perf_counter()
        for record in records:
            encode(record)
        seconds = time.perf_counter() - started
    finally:
        gc.enable()
    return seconds / len(records) * 1e6


def measure_baseline(
    revision: str, postgres_url: str, rows_path: Path, rounds: int
) -> dict[str, Any]:
    """The same measurement with `app/` as committed at `revision`."""
    with tempfile.TemporaryDirectory(prefix="selftune-encode-") as tree:
        archive = subprocess.run(
            ["git", "archive", revision, "app"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
        # The baseline's `app` first on the path, this checkout's `bench` next.
        script = (
            f"import sys; sys.path[:0] = [{tree!r}, {str(ROOT)!r}]; "
            "from bench.encode import main; main()"
        )
        output = subprocess.run(
            [sys.executable, "-c", script, "--json", "--postgres-url", postgres_url]
            + ["--rows", str(rows_path), "--rounds", str(rounds)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    result: dict[str, Any] = json.loads(output)
    return result


def format_table(
    current: dict[str, Any], baseline: dict[str, Any] | None, revision: str
) -> str:
    """A Markdown table; with a baseline, its figures beside each of ours."""
    encoders = ("service", "peers")
    head = ["rows", "n", "frame B"]
    for encoder in encoders:
        if baseline is not None:
            head.append(f"{encoder} µs at {revision}")
        head.append(f"{encoder} µs")
    if baseline is not None:
        head.append("frames")

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, now in current.items():
        cells = [name, str(now["rows"]), str(now["frame_bytes"])]
        for encoder in encoders:
            if baseline is not None:
                cells.append(f"{baseline[name]['us_per_row'][encoder]:.2f}")
            cells.append(f"{now['us_per_row'][encoder]:.2f}")
        if baseline is not None:
            same = baseline[name]["frames_sha256"] == now["frames_sha256"]
            cells.append("identical" if same else "**differ**")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
    )
    parser.add_argument("--baseline", metavar="REV", help="also measure app/ at REV")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--seed", type=int, default=4)
    # For the baseline's process: rows from a file, results as JSON.
    parser.add_argument("--rows", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    if args.rows is not None:
        sets = json.loads(args.rows.read_text())
    else:
        sets = build_row_sets(args.seed)

    current = asyncio.run(measure(args.postgres_url, sets, args.rounds))
    if args.json:
        sys.stdout.write(json.dumps(current) + "\n")
        return

    baseline = None
    if args.baseline is not None:
        with tempfile.NamedTemporaryFile("w", suffix=".json") as rows_file:
            json.dump(sets, rows_file)
            rows_file.flush()
            baseline = measure_baseline(
                args.baseline, args.postgres_url, Path(rows_file.name), args.rounds
            )
    sys.stdout.write(format_table(current, baseline, args.baseline or "") + "\n")


if __name__ == "__main__":
    main()
