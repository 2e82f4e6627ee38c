"""Timing shared by the bench scripts (bench/, the scripts' folder, is on sys.path)."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds_each(candidates: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median time of each candidate, the candidates taking turns (fair on a shared machine)."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median time of one callable."""
    return median_seconds_each({"fn": fn}, repeats)["fn"]
