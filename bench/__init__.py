"""The performance benchmark of issue 4: `uv run python -m bench [--quick]`.

The service and three small peers run as separate server processes; load
clients run in their own processes; this package drives them and writes
`bench/results/`. docs/PERFORMANCE.md explains the method and the numbers.
"""
