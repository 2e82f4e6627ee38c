"""Timing and machine-load checks shared by the bench scripts (bench/, the scripts' folder, is on sys.path).

Every bench script calls :func:`add_machine_options` on its parser, :func:`begin` before measuring and
:func:`finish` before its last line: both print the machine's load and cores, and refuse to report
(exit 1 with a message) when the 1-minute load average is above the bench's own threads plus
``LOAD_SLACK`` (shared machines make timings meaningless), unless ``--max-load`` is raised.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch

LOAD_SLACK = 1.0  # load above the bench's own threads still accepted by default


def add_machine_options(parser: argparse.ArgumentParser, threads: int = 1) -> None:
    """``--threads`` (torch threads of the main process) and ``--max-load``."""
    parser.add_argument("--threads", type=int, default=threads, help="torch threads of the main process")
    parser.add_argument("--max-load", type=float, default=None,
                        help=f"refuse to report above this 1-minute load average (default: threads + {LOAD_SLACK:g})")


def check_load(threads: int, max_load: float | None, when: str) -> None:
    """Print the load; exit 1 when the 1-minute load average is above ``max_load``
    (default ``threads + LOAD_SLACK``)."""
    limit = threads + LOAD_SLACK if max_load is None else max_load
    load = os.getloadavg()
    print(f"machine at {when}: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"(1, 5, 15 min), this bench {threads} threads, limit {limit:g}", flush=True)
    if load[0] > limit:
        void = "refusing to report" if when == "start" else "the results above do not count"
        sys.exit(f"{void}: the 1-minute load {load[0]:.2f} is above {limit:g} (other processes share "
                 f"the cores); rerun on a quiet machine or raise --max-load")


def begin(args: argparse.Namespace, extra_threads: int = 0) -> int:
    """Set torch's threads to ``args.threads`` and check the load; returns the bench's threads
    (``extra_threads``: those of its worker processes)."""
    torch.set_num_threads(args.threads)
    threads = args.threads + extra_threads
    check_load(threads, args.max_load, "start")
    return threads


def finish(args: argparse.Namespace, threads: int) -> None:
    """Check the load again once measured (the bench's own threads count in it now)."""
    check_load(threads, args.max_load, "end")


def median_seconds_each(candidates: dict[str, Callable[[], object]], repeats: int,
                        clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median time of each candidate, the candidates taking turns (fair on a shared machine); ``clock``:
    wall time, or e.g. ``time.process_time`` (the process's CPU time, blind to others on the cores)."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            begin = clock()
            fn()
            times[name].append(clock() - begin)
    return {name: statistics.median(t) for name, t in times.items()}


def median_seconds(fn: Callable[[], object], repeats: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """Median time of one callable."""
    return median_seconds_each({"fn": fn}, repeats, clock)["fn"]
