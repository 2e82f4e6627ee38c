"""Curves of a run's ``metrics.csv`` (one row per epoch), alone or overlaid with other runs.

The generation-validation metrics of ``gv_metrics.csv`` (rows on the epochs where the phase ran)
join them by epoch; each curve is drawn through the epochs that have a value.

A metric name selects a column, or the pair ``train_<name>`` / ``valid_<name>`` drawn in one
panel (``loss`` draws train_loss and valid_loss). Figures are drawn with matplotlib's object
API (no pyplot, no global backend) and written under a temporary name, then renamed.
"""
from __future__ import annotations

import csv
import math
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
import yaml
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from dwiml.atomic import atomic_path
from dwiml.errors import DwimlError
from dwiml.run_folder import METRICS, RunFolder
DEFAULT_METRICS = ("loss", "learning_rate")
DEFAULT_GV_METRICS = ("gv_final_distance_mm", "gv_valid_pct")  # drawn too when the runs have them
PHASES = ("train", "valid")  # drawn dashed and solid
FIGURE_WIDTH, PANEL_HEIGHT = 8.0, 3.2  # inches
EPOCH_MARGIN = 0.5  # epochs of space left and right of the curves
LEGEND_GAP = 0.15  # inches between the panels and the legend of several runs


def plot_metrics(run_dir: str | Path, metrics: Sequence[str] | None = None) -> Path:
    """Write ``<run_dir>/plots/metrics.png`` from ``<run_dir>/metrics.csv``; return its path."""
    return plot_runs({"": Path(run_dir)}, RunFolder(run_dir).metrics_plot, metrics)


def plot_runs(runs: Mapping[str, Path], out: str | Path, metrics: Sequence[str] | None = None) -> Path:
    """Overlay the runs (label -> run folder) in one figure, one panel per metric; return ``out``."""
    return _save(runs_figure(runs, metrics), Path(out))


def runs_figure(runs: Mapping[str, Path], metrics: Sequence[str] | None = None) -> Figure:
    """The figure of :func:`plot_runs`: one panel per metric, integer epochs, legends never clipped."""
    tables = {label: read_metrics(run) for label, run in runs.items()}
    available = set().union(*tables.values())
    metrics = list(metrics or DEFAULT_METRICS + tuple(m for m in DEFAULT_GV_METRICS if m in available))
    for name in metrics:
        if not _columns(name, available):
            raise DwimlError(f"no metric '{name}' in {', '.join(str(RunFolder(r).metrics) for r in runs.values())} "
                             f"(columns: {', '.join(sorted(available))})")
    height = PANEL_HEIGHT * len(metrics)
    fig = Figure(figsize=(FIGURE_WIDTH, height))  # fixed margins: a layout engine doubles the drawing time
    axes = fig.subplots(len(metrics), 1, squeeze=False)[:, 0]
    colors = _colors(len(tables))
    epochs = np.concatenate([table["epoch"] for table in tables.values()])
    for ax, name in zip(axes, metrics):
        for color, table in zip(colors, tables.values()):
            for column in _columns(name, table):
                has_value = ~np.isnan(table[column])
                ax.plot(table["epoch"][has_value], table[column][has_value], _style(column), color=color,
                        marker=".")
        ax.set(xlabel="epoch", ylabel=name)
        ax.set_xlim(epochs.min() - EPOCH_MARGIN, epochs.max() + EPOCH_MARGIN)  # one epoch: no fractional ticks
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3)
    runs_legend = [Line2D([], [], color=c, label=label) for c, label in zip(colors, tables) if label]
    phases_legend = [Line2D([], [], linestyle=_style(p), color="k", label=p) for p in PHASES
                     if any(c.startswith(f"{p}_") for name in metrics for c in _columns(name, available))]
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.5 / height, top=1 - 0.2 / height, hspace=0.3)
    if runs_legend:
        _legend_beside(fig, runs_legend + phases_legend)
    elif phases_legend:
        axes[0].legend(handles=phases_legend, loc="upper right", fontsize="small", handlelength=3)
    return fig


def _legend_beside(fig: Figure, handles: list[Line2D]) -> None:
    """The legend right of the panels, the figure widened by its measured width (never clipped)."""
    legend = fig.legend(handles=handles, loc="upper left", fontsize="small", handlelength=3)
    width = legend.get_window_extent(FigureCanvasAgg(fig).get_renderer()).width / fig.dpi
    panels_right = fig.subplotpars.right * FIGURE_WIDTH
    total = panels_right + LEGEND_GAP + width + LEGEND_GAP
    fig.set_figwidth(total)
    fig.subplots_adjust(left=fig.subplotpars.left * FIGURE_WIDTH / total, right=panels_right / total)
    legend.set_bbox_to_anchor(((panels_right + LEGEND_GAP) / total, 0.99), transform=fig.transFigure)


def read_metrics(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The numeric columns of ``<run_dir>/metrics.csv``, with those of ``gv_metrics.csv`` placed at
    their epochs (empty, non-numeric or missing cells are NaN)."""
    run = RunFolder(run_dir)
    if not run.metrics.is_file():
        raise DwimlError(f"{run.metrics}: no such metrics file")
    columns = _read_csv(run.metrics)
    if "epoch" not in columns:
        raise DwimlError(f"{run.metrics}: no epoch rows (expected a header with an 'epoch' column)")
    gv = _read_csv(run.gv_metrics) if run.gv_metrics.is_file() else {}
    if "epoch" in gv:
        row_of = {epoch: row for row, epoch in enumerate(columns["epoch"])}
        rows, found = np.array([[row_of.get(e, 0), e in row_of] for e in gv.pop("epoch")], dtype=np.int64).T
        for key, values in gv.items():
            columns[key] = np.full(len(columns["epoch"]), np.nan)
            columns[key][rows[found == 1]] = values[found == 1]
    return {key: values for key, values in columns.items() if not np.isnan(values).all()}


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    """Column -> values of a CSV file; {} when it has no rows."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    return {key: np.array([_to_float(row[key]) for row in rows]) for key in rows[0]}


def find_runs(paths: Sequence[str | Path]) -> dict[str, Path]:
    """Label -> run folder for every run in ``paths``; a folder without ``metrics.csv`` (a multirun
    sweep, ``outputs/``) expands to the runs below it, labelled by the overrides that differ."""
    runs: dict[str, Path] = {}
    for path in map(Path, paths):
        if RunFolder(path).is_run():
            runs[_short_name(path)] = path
            continue
        jobs = sorted((m.parent for m in path.rglob(METRICS)), key=_natural_key)
        if not jobs:
            raise DwimlError(f"{path}: no {METRICS} in this folder or below it")
        for label, job in _label_by_overrides(path, jobs).items():
            runs[label if label not in runs else str(job)] = job
    return runs


def _label_by_overrides(sweep: Path, jobs: list[Path]) -> dict[str, Path]:
    overrides = [_overrides(job) for job in jobs]
    common = set.intersection(*map(set, overrides))
    labels = [" ".join(o for o in job_overrides if o not in common) for job_overrides in overrides]
    return {label or _short_name(job): job for label, job in zip(labels, jobs)}


def _short_name(run_dir: Path) -> str:
    """The last two parts of a run folder: ``<date>/<time>``, ``<time>/<job>``."""
    return "/".join(run_dir.absolute().parts[-2:])


def _overrides(run_dir: Path) -> list[str]:
    path = RunFolder(run_dir).overrides
    if not path.is_file():
        return []
    with open(path) as f:
        return [str(o) for o in yaml.safe_load(f) or []]


def _columns(name: str, columns: Collection[str]) -> list[str]:
    candidates = [name] if name in columns else [f"{phase}_{name}" for phase in PHASES]
    return [c for c in candidates if c in columns]


def _style(name: str) -> str:
    """Dashed for training (``train``, ``train_loss``), solid otherwise."""
    return "--" if name.split("_")[0] == "train" else "-"


def _colors(nb_runs: int) -> list:
    """matplotlib's ten default colours, or evenly spaced colours of a colour map for more runs."""
    if nb_runs <= 10:
        return [f"C{i}" for i in range(nb_runs)]
    return list(colormaps["turbo"](np.linspace(0.05, 0.95, nb_runs)))


def _to_float(text: str | None) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def _save(fig: Figure, out: Path) -> Path:
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return out
