"""A soak run: two `serve` instances under writers, resuming clients and random faults.

Run with `uv run python -m soak --minutes N`; not part of the test suite.
"""
