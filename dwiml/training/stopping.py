"""When to stop: early stopping on a monitored metric, and requests to stop now
(SIGTERM, SIGUSR1 or SIGINT, e.g. from SLURM's preemption, ``timeout`` or Ctrl-C, or the wall-time
budget ``max_minutes``)."""
from __future__ import annotations

import math
import signal
import threading
import time

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


def ignore_stop_signals(worker_id: int) -> None:
    """A DataLoader worker's ``worker_init_fn``: the stop signals, sent to the whole process group, are
    the main process's to handle (it checkpoints, then ends its workers)."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


class EarlyStopping:
    """Tracks the best value of one metric; out of patience after ``patience`` epochs without
    an improvement larger than ``delta``."""

    def __init__(self, monitor: str = "valid_loss", mode: str = "min", patience: int | None = None,
                 delta: float = 0.0):
        self.monitor, self.mode, self.patience, self.delta = monitor, mode, patience, delta
        self.best, self.best_epoch, self.bad_epochs = (math.inf if mode == "min" else -math.inf), 0, 0

    def update(self, value: float, epoch: int) -> bool:
        """Record an epoch's value; True when it is the new best."""
        better = value < self.best - self.delta if self.mode == "min" else value > self.best + self.delta
        if better:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return better

    @property
    def out_of_patience(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]


class StopRequests:
    """A context that records the stop signals instead of dying, and watches the wall time.

    ``reason`` is None until the run should checkpoint and exit; the trainer looks at it at
    every optimizer-step boundary.
    """

    def __init__(self, max_minutes: float | None = None):
        self.max_minutes = max_minutes
        self.signal_name: str | None = None
        self._start = time.monotonic()
        self._previous: dict = {}

    @property
    def reason(self) -> str | None:
        if self.signal_name is not None:
            return self.signal_name
        if self.max_minutes is not None and time.monotonic() - self._start > 60 * self.max_minutes:
            return f"trainer.max_minutes={self.max_minutes} reached"
        return None

    def _record(self, signum: int, frame) -> None:
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> "StopRequests":
        self._start = time.monotonic()
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._record) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
