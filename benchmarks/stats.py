"""Percentiles of one run, and the median and spread of several."""

from __future__ import annotations

import statistics

PERCENTILES = (50, 90, 99, 99.9)


def percentiles(seconds: list[float]) -> dict[str, float]:
    """p50…p99.9 and max of latencies given in seconds, in milliseconds (nearest rank)."""
    if not seconds:
        return {}
    ordered = sorted(seconds)
    last = len(ordered) - 1
    found = {f"p{p:g}": ordered[min(last, round(p / 100 * last))] * 1000 for p in PERCENTILES}
    found["max"] = ordered[-1] * 1000
    return found


def median_and_spread(values: list[float]) -> tuple[float, float]:
    """The median of repeated measurements, and their spread as (max - min) / median."""
    middle = statistics.median(values)
    return middle, (max(values) - min(values)) / middle if middle else 0.0
