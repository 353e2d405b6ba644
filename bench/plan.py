"""How much of each scenario to run: the quick plan and the full one."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    mode: str
    # Fan-out: streams on one run, the steady rates, and where to search
    # for the highest sustained rate.
    fanout_streams: tuple[int, ...]
    fanout_rates: tuple[float, ...]
    phase_seconds: float
    ramp_streams: tuple[int, ...]
    ramp_step_seconds: float
    ramp_max_steps: int
    # The peers that cost a connection or a query per stream stop here;
    # listen-per-client is further capped by the server's max_connections.
    listen_per_client_max_streams: int
    polling_streams: tuple[int, ...]
    # Many runs: streams spread over runs, a writer on every run.
    many_runs: int
    many_runs_streams: int
    many_runs_rate_per_run: float
    # Replay of one long run.
    replay_events: int
    replay_clients: int
    # Writes through the publish INSERT and plain INSERT (+ NOTIFY).
    writes_seconds: float
    writes_rounds: int
    writes_streams: int
    # A frozen client among many.
    frozen_streams: int
    frozen_rate: float
    frozen_pad_bytes: int
    frozen_seconds: float
    frozen_send_timeout_seconds: float
    # The LISTEN floor with nothing else running.
    floor_events: int
    # py-spy, with --profile.
    profile_streams: int
    profile_rate: float
    profile_seconds: float


QUICK = Plan(
    mode="quick",
    fanout_streams=(10, 200, 1000),
    fanout_rates=(10.0, 1.0),
    phase_seconds=1.5,
    ramp_streams=(1000,),
    ramp_step_seconds=1.0,
    ramp_max_steps=3,
    listen_per_client_max_streams=40,
    polling_streams=(10, 1000),
    many_runs=20,
    many_runs_streams=200,
    many_runs_rate_per_run=2.0,
    replay_events=10_000,
    replay_clients=10,
    writes_seconds=1.0,
    writes_rounds=1,
    writes_streams=200,
    frozen_streams=200,
    frozen_rate=10.0,
    frozen_pad_bytes=8000,
    frozen_seconds=3.0,
    frozen_send_timeout_seconds=2.0,
    floor_events=40,
    profile_streams=1000,
    profile_rate=5.0,
    profile_seconds=20.0,
)

FULL = Plan(
    mode="full",
    fanout_streams=(10, 1000, 5000, 10000),
    fanout_rates=(10.0, 1.0),
    phase_seconds=6.0,
    ramp_streams=(1000, 5000, 10000),
    ramp_step_seconds=2.5,
    ramp_max_steps=7,
    listen_per_client_max_streams=40,
    polling_streams=(10, 1000, 5000, 10000),
    many_runs=100,
    many_runs_streams=1000,
    many_runs_rate_per_run=1.0,
    replay_events=100_000,
    replay_clients=10,
    writes_seconds=2.0,
    writes_rounds=3,
    writes_streams=1000,
    frozen_streams=1000,
    frozen_rate=10.0,
    frozen_pad_bytes=8000,
    frozen_seconds=15.0,
    frozen_send_timeout_seconds=10.0,
    floor_events=200,
    profile_streams=1000,
    profile_rate=5.0,
    profile_seconds=30.0,
)
