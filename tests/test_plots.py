"""Training curves: PNG files from real metrics.csv files, sweeps expanded to their jobs."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import matplotlib.colors
import matplotlib.image
import numpy as np
import pytest
import yaml

from dwiml.errors import DwimlError
from dwiml.viz.plots import find_runs, plot_metrics, plot_runs, runs_figure

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["epoch", "train_loss", "valid_loss", "learning_rate", "grad_norm", "epoch_seconds", "note"]


def write_run(run_dir: Path, nb_epochs: int = 4, scale: float = 1.0, overrides: list[str] | None = None) -> Path:
    """A run folder as the trainer writes it: metrics.csv (with an extra text column) and .hydra/."""
    run_dir.mkdir(parents=True)
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for epoch in range(1, nb_epochs + 1):
            writer.writerow([epoch, scale / epoch, 1.2 * scale / epoch, 1e-3 * 0.9 ** epoch, 2.0 + epoch, 1.5, "ok"])
    if overrides is not None:
        (run_dir / ".hydra").mkdir()
        (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    return run_dir


def png(path: Path) -> np.ndarray:
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(path)


def pixels_of(image: np.ndarray, color: str) -> int:
    """Pixels within a small tolerance of a matplotlib colour (lines are antialiased)."""
    rgb = np.array(matplotlib.colors.to_rgb(color))
    return int((np.abs(image[..., :3] - rgb).max(axis=-1) < 0.02).sum())


def test_plot_metrics_writes_one_panel_per_metric(tmp_path):
    run = write_run(tmp_path / "run")
    out = plot_metrics(run)
    assert out == run / "plots" / "metrics.png"
    image = png(out)
    assert image.shape == (2 * 320, 800, 4)  # figsize 8 x 3.2 inches per panel at 100 dpi
    assert pixels_of(image, "C0") > 200 and pixels_of(image, "C1") == 0  # one run: one colour
    assert sorted(p.name for p in out.parent.iterdir()) == ["metrics.png"]  # no temporary file left

    one = png(plot_metrics(run, ["grad_norm"]))
    assert one.shape == (320, 800, 4)


def test_unknown_metric_and_missing_file_are_named(tmp_path):
    run = write_run(tmp_path / "run")
    with pytest.raises(DwimlError, match=r"no metric 'accuracy' in .*metrics.csv \(columns: .*grad_norm"):
        plot_metrics(run, ["accuracy"])
    with pytest.raises(DwimlError, match="note"):  # a text column is not a metric
        plot_metrics(run, ["note"])
    with pytest.raises(DwimlError, match=str(tmp_path / "nothing")):
        find_runs([tmp_path / "nothing"])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.csv").write_text("epoch,train_loss\n")
    with pytest.raises(DwimlError, match="empty/metrics.csv: no epoch rows"):
        plot_metrics(tmp_path / "empty")


def test_a_sweep_expands_to_its_jobs_labelled_by_their_overrides(tmp_path):
    sweep = tmp_path / "multirun" / "2026-11-26" / "01-00-00-000000"
    for job in range(12):
        write_run(sweep / str(job), scale=job + 1,
                  overrides=["trainer.max_epochs=4", f"optim.lr={job / 1000}", "model=lstm"])
    single = write_run(tmp_path / "outputs" / "single", overrides=[])
    runs = find_runs([sweep, single])
    assert list(runs.values()) == [sweep / str(job) for job in range(12)] + [single]  # 10 and 11 after 9
    assert list(runs)[:3] == ["optim.lr=0.0", "optim.lr=0.001", "optim.lr=0.002"]
    assert list(runs)[-1] == "outputs/single"

    everything = find_runs([tmp_path])  # any folder above runs works too
    assert set(everything.values()) == set(runs.values())

    image = png(plot_runs(runs, tmp_path / "all.png", ["loss", "learning_rate", "grad_norm"]))
    assert image.shape[0] == 3 * 320 and image.shape[1] > 800  # widened for the legend beside the panels
    turbo = matplotlib.colormaps["turbo"](np.linspace(0.05, 0.95, 13))  # more than ten runs: a colour map
    assert all(pixels_of(image, color[:3]) > 50 for color in turbo)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dwiml.cli.plot_logs", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_plot_logs_command(tmp_path):
    a = write_run(tmp_path / "a", overrides=["optim=adam"])
    b = write_run(tmp_path / "b", nb_epochs=6, scale=2.0, overrides=["optim=sgd"])
    result = cli(str(a), str(b), "--metrics", "loss", "epoch_seconds", "--out", str(tmp_path / "ab.png"))
    assert result.returncode == 0, result.stderr
    assert f"wrote {tmp_path / 'ab.png'} (2 runs)" in result.stdout
    image = png(tmp_path / "ab.png")
    assert image.shape[0] == 2 * 320 and pixels_of(image, "C0") > 100 and pixels_of(image, "C1") > 100

    bad = cli(str(a), "--metrics", "accuracy", "--out", str(tmp_path / "bad.png"))
    assert bad.returncode == 1 and bad.stderr.startswith("dwiml-plot-logs: error: no metric 'accuracy'")
    assert not (tmp_path / "bad.png").exists()


def test_legend_of_long_labels_fits_and_epoch_ticks_are_whole(tmp_path):
    long = "model.head=fisher_von_mises_mixture optim.lr=0.001 sampler.batch_size=1000 loader.step_size_mm=0.5"
    runs = {long: write_run(tmp_path / "a", nb_epochs=1), "short": write_run(tmp_path / "b", nb_epochs=1)}
    image = png(plot_runs(runs, tmp_path / "long.png"))
    background = np.all(image[..., :3] > 0.99, axis=-1)
    assert background[:, -3:].all() and background[-3:, :].all() and background[:3, :].all()  # nothing cut
    legend_columns = np.flatnonzero(~background[: image.shape[0] // 4].all(axis=0))
    assert legend_columns.max() > 800  # the legend lies right of the 8-inch panels, not over them

    figure = runs_figure(runs)
    for ax in figure.axes:
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert ticks == [1.0]  # one epoch: one whole tick, no fractions
