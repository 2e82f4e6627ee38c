"""The trainer's own overhead: per-batch metrics, epoch metrics, checkpoints and the best model,
as a share of the epoch time, for the default LSTM on the built-in phantom (CPU).

Each overhead is the real trainer method, timed in place while the real run goes on.
Prints per-epoch medians for two checkpoint settings, side by side. Target: under 5%.
    python bench/trainer_overhead.py [--epochs 4] [--batches 20] [--cache-dir DIR] [--threads 1] [--max-load L]
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from hydra import compose, initialize_config_module

from dwiml.config.schema import register_configs
from dwiml.data.builtin import phantom_hdf5
from dwiml.training import trainer as trainer_module
from dwiml.training.run import build_trainer
from timing import add_machine_options, begin, finish  # bench/, the script's folder, is on sys.path


def timed(fn, name: str, seconds: dict):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds[name] += time.perf_counter() - start
    return wrapper


def measure(cache_dir: Path, overrides: list[str], epochs: int) -> tuple[float, dict]:
    """Median epoch seconds and median overhead seconds per epoch, by part."""
    with initialize_config_module("dwiml.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"dataset.cache_dir={cache_dir}", "dataset.nb_subjects=3",
                                          "trainer.progress_bar=false", "trainer.patience=null",
                                          f"trainer.max_epochs={epochs}", *overrides])
    per_epoch: list[dict] = []
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = build_trainer(cfg, Path(run_dir))
        seconds: dict = defaultdict(float)
        trainer._record_batch = timed(trainer._record_batch, "batch metrics", seconds)
        trainer._save = timed(trainer._save, "checkpoints", seconds)
        trainer.metrics.append = timed(trainer.metrics.append, "epoch metrics", seconds)
        trainer_module.save_model = timed(trainer_module.save_model, "best model", seconds)
        end_epoch = trainer._end_epoch

        def end_epoch_and_record():
            end_epoch()
            per_epoch.append({**seconds, "epoch": time.perf_counter() - per_epoch_start[0]})
            seconds.clear()
            per_epoch_start[0] = time.perf_counter()

        per_epoch_start = [time.perf_counter()]
        trainer._end_epoch = end_epoch_and_record
        trainer.fit()
        trainer_module.save_model = trainer_module.save_model.__wrapped__
    parts = ("batch metrics", "epoch metrics", "checkpoints", "best model")
    return (statistics.median(e["epoch"] for e in per_epoch),
            {p: statistics.median(e.get(p, 0.0) for e in per_epoch) for p in parts})


def main() -> None:
    register_configs()
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(os.environ.get("DWIML_CACHE_DIR", "~/.cache/dwiml")).expanduser(),
                        help="where the phantom is (or gets) generated [$DWIML_CACHE_DIR or ~/.cache/dwiml: %(default)s]")
    add_machine_options(parser)
    args = parser.parse_args()
    threads = begin(args)
    phantom_hdf5(args.cache_dir, nb_subjects=3, seed=1234)
    common = [f"trainer.max_batches_per_epoch_training={args.batches}", "trainer.max_batches_per_epoch_validation=2"]
    settings = {"checkpoint every epoch": [],
                "checkpoint every 5 batches": ["trainer.checkpoint_every_batches=5"]}
    print(f"default LSTM, phantom, {args.batches} training batches of 100 streamlines per epoch, "
          f"medians over {args.epochs} epochs")
    for name, overrides in settings.items():
        epoch, parts = measure(args.cache_dir, common + overrides, args.epochs)
        total = sum(parts.values())
        detail = ", ".join(f"{p} {1000 * s:.1f} ms" for p, s in parts.items())
        print(f"{name:28s} epoch {epoch:7.2f} s  overhead {1000 * total:7.1f} ms = {100 * total / epoch:5.2f}%  "
              f"({detail})")
    finish(args, threads)


if __name__ == "__main__":
    main()
