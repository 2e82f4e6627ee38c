"""Cost of redrawing a run's curves (``plot_metrics``, called after every epoch).

Prints the median time for metrics files of 10, 100 and 1000 epochs, and, given a run folder,
its share of that run's median epoch time. Usage:
    python bench/plots.py [RUN_DIR] [--repeats 5] [--max-load L]
"""
from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
from pathlib import Path

from timing import add_machine_options, begin, finish, median_seconds  # bench/, the script's folder, is on sys.path

from dwiml.run_folder import RunFolder
from dwiml.viz.plots import plot_metrics, read_metrics


def fake_run(folder: Path, nb_epochs: int) -> Path:
    folder.mkdir()
    with open(RunFolder(folder).metrics, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "train_loss", "valid_loss", "learning_rate", "grad_norm", "epoch_seconds"])
        writer.writerows([e, 1 / e, 1.1 / e, 1e-3 * 0.99 ** e, 1.0, 1.0] for e in range(1, nb_epochs + 1))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", nargs="?", type=Path, help="a real run folder, for the share of its epoch time")
    parser.add_argument("--repeats", type=int, default=5)
    add_machine_options(parser)
    args = parser.parse_args()
    threads = begin(args)
    with tempfile.TemporaryDirectory() as tmp:
        for nb_epochs in (10, 100, 1000):
            run = fake_run(Path(tmp) / str(nb_epochs), nb_epochs)
            seconds = median_seconds(lambda: plot_metrics(run), args.repeats)
            print(f"plot_metrics, {nb_epochs:4d} epochs: median {seconds:.3f} s")
    if args.run_dir:
        plot = median_seconds(lambda: plot_metrics(args.run_dir), args.repeats)
        epoch = statistics.median(read_metrics(args.run_dir)["epoch_seconds"])
        print(f"{args.run_dir}: plot {plot:.3f} s, epoch {epoch:.3f} s (median), ratio {plot / epoch:.1%}")
    finish(args, threads)


if __name__ == "__main__":
    main()
