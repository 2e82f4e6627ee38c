"""Metrics on disk: CSV files with a fixed header, appended row by row.

``metrics.csv`` holds one row per epoch, ``batch_metrics.csv`` one row per batch and
rank. Rows written after the checkpoint a run resumes from are dropped on resume, so
each file reads as if the run had never stopped.
"""
from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from pathlib import Path

from dwiml.atomic import atomic_path


class CsvLog:
    """A CSV file with ``columns``, written with one ``open`` per append (safe to kill)."""

    def __init__(self, path: Path, columns: tuple[str, ...]):
        self.path, self.columns = Path(path), columns

    def append(self, rows: Iterable[dict]) -> None:
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            if new:
                writer.writeheader()
            writer.writerows(rows)

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def keep(self, predicate: Callable[[dict], bool]) -> None:
        """Keep only the rows where ``predicate(row)`` holds (rewritten atomically)."""
        if not self.path.exists():
            return
        rows = [r for r in self.rows() if None not in r.values() and predicate(r)]  # None: a cut line
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(rows)
