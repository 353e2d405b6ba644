"""Percentiles and rates, the same way for every system."""

import math

PERCENTILES = (50, 90, 99)


def percentile(ordered: list[float], fraction: float) -> float:
    """The nearest-rank percentile of an already sorted list."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summarise_latencies(seconds: list[float]) -> dict[str, float]:
    """Count, p50, p90, p99 and max in milliseconds; empty when nothing came."""
    if not seconds:
        return {"n": 0}
    ordered = sorted(seconds)
    summary: dict[str, float] = {"n": len(ordered)}
    for point in PERCENTILES:
        summary[f"p{point}"] = round(percentile(ordered, point / 100) * 1000, 2)
    summary["max"] = round(ordered[-1] * 1000, 2)
    return summary


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)
