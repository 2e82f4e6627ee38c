"""The run folder: the one place that knows its layout, where it is created, and when the run started.

::

    outputs/<date>/<time>-<microseconds>/     multirun/<date>/<time>-<microseconds>/<job>/ for -m
      .hydra/config.yaml, overrides.yaml   the composed config (.hydra/resumed-<time>/ for each continuation)
      train.log           the text log (Hydra's job log)
      dataset.json        the HDF5 file the run trains on, resolved
      metrics.csv, batch_metrics.csv, gv_metrics.csv
      checkpoint/         state.pt, and a model folder of the latest weights (see dwiml.models.io)
      best_model/         a model folder
      plots/metrics.png
      tracked/<subject>.trk   made at the run's end for the tracking command it prints
      comet/, tensorboard/   with those loggers

The Hydra resolvers below name the folders in ``conf/train.yaml`` (``hydra.run.dir``,
``hydra.sweep.dir``, ``hydra.output_subdir`` and the job log file) from this process's run start:
the app (:mod:`dwiml.cli.train`) sets it once with :func:`start_run`, to rank 0's clock under torchrun,
where only rank 0 writes Hydra's files and the log.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dwiml.atomic import atomic_path, complete_copy
from dwiml.errors import DwimlError

CONFIG_DIR, CONFIG, OVERRIDES = ".hydra", "config.yaml", "overrides.yaml"
LOG = "train.log"
DATASET = "dataset.json"
METRICS, BATCH_METRICS, GV_METRICS = "metrics.csv", "batch_metrics.csv", "gv_metrics.csv"
CHECKPOINT, STATE = "checkpoint", "state.pt"
BEST_MODEL = "best_model"
PLOTS, METRICS_PLOT = "plots", "metrics.png"
TRACKED = "tracked"
COMET, TENSORBOARD = "comet", "tensorboard"
OUTPUTS, MULTIRUN = "outputs", "multirun"


class RunFolder:
    """The paths of one run folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.config, self.overrides = self.root / CONFIG_DIR / CONFIG, self.root / CONFIG_DIR / OVERRIDES
        self.log, self.dataset = self.root / LOG, self.root / DATASET
        self.metrics, self.batch_metrics = self.root / METRICS, self.root / BATCH_METRICS
        self.gv_metrics = self.root / GV_METRICS
        self.checkpoint, self.best_model = self.root / CHECKPOINT, self.root / BEST_MODEL
        self.metrics_plot = self.root / PLOTS / METRICS_PLOT
        self.comet, self.tensorboard = self.root / COMET, self.root / TENSORBOARD

    def tracked(self, subject: str) -> Path:
        """Where the run's closing lines suggest writing ``subject``'s tractogram."""
        return self.root / TRACKED / f"{subject}.trk"

    def is_run(self) -> bool:
        """Whether training wrote here (a folder of a sweep, or ``outputs/``, is not a run)."""
        return self.metrics.is_file()

    def checkpoint_state(self) -> Path | None:
        """The checkpoint file, in a complete copy of the checkpoint if a save was cut short; None without any."""
        folder = complete_copy(self.checkpoint)
        return None if folder is None else folder / STATE

    def holds_run(self) -> bool:
        """Whether training already wrote here (a batch, or a checkpoint)."""
        return self.batch_metrics.is_file() or self.checkpoint_state() is not None

    def continues(self, resume: str | None, auto_resume: bool) -> bool:
        """Whether a run started here continues the folder's run; a new run in a folder that holds one is
        refused: it continues only with ``resume=`` or ``trainer.auto_resume=true``."""
        if resume is not None:
            return True
        if not self.holds_run():
            return False
        if not auto_resume:
            raise DwimlError(f"{self.root} already holds a run: continue it with resume={self.root} or "
                             "trainer.auto_resume=true, or train in another folder")
        return True

    def save_continuation(self, config: DictConfig, overrides: list[str]) -> None:
        """Record a continued run's config and this command's overrides in ``.hydra/resumed-<time>/``."""
        folder = self.root / CONFIG_DIR / f"resumed-{_START.time:%Y-%m-%d_%H-%M-%S-%f}"
        for name, node in ((CONFIG, config), (OVERRIDES, OmegaConf.create(list(overrides)))):
            with atomic_path(folder / name) as tmp:
                OmegaConf.save(node, tmp)

    def write_dataset(self, hdf5_path: str | Path) -> None:
        """Record the HDF5 file the run trains on (absolute), for the commands that read the run later."""
        with atomic_path(self.dataset) as tmp:
            tmp.write_text(json.dumps({"hdf5_path": str(Path(hdf5_path).absolute())}) + "\n")

    def hdf5_path(self) -> Path | None:
        """The HDF5 file the run trained on, None when the run has no record of it."""
        if not self.dataset.is_file():
            return None
        try:
            return Path(json.loads(self.dataset.read_text())["hdf5_path"])
        except (ValueError, KeyError, TypeError):
            raise DwimlError(f"{self.dataset}: not a dwiml dataset record") from None


@dataclass
class _RunStart:
    time: datetime
    writer: bool  # this process writes the run folder (rank 0 under torchrun)


_START = _RunStart(datetime.now(), True)


def start_run(time: datetime, writer: bool) -> None:
    """This process's run start (rank 0's time under torchrun) and whether it writes the run folder."""
    _START.time, _START.writer = time, writer


def run_dir(resume: str | None) -> str:
    """``hydra.run.dir``: the folder to resume, or ``outputs/<date>/<time>``.

    A ``resume`` folder is checked here, before Hydra creates anything; a bad one ends the app
    with a one-line error (Hydra cannot report an exception raised by a resolver)."""
    if resume is None:
        return f"{OUTPUTS}/{_START.time:%Y-%m-%d}/{_START.time:%H-%M-%S-%f}"
    folder = Path(resume).expanduser().absolute()
    if not folder.is_dir():
        sys.exit(f"dwiml-train: error: resume: run folder {folder} does not exist")
    if RunFolder(folder).checkpoint_state() is None:
        sys.exit(f"dwiml-train: error: resume: {folder} holds no {CHECKPOINT}/")
    return str(folder)


def sweep_dir() -> str:
    """``hydra.sweep.dir``: ``multirun/<date>/<time>``."""
    return f"{MULTIRUN}/{_START.time:%Y-%m-%d}/{_START.time:%H-%M-%S-%f}"


def output_subdir(resume: str | None, auto_resume: bool, output_dir: str) -> str | None:
    """``hydra.output_subdir``: ``.hydra`` for a new run; none for a run that continues (its saved config
    is never rewritten: the app checks the continuation, then records it with
    :meth:`RunFolder.save_continuation`) and on the processes that do not write the run folder. A new
    run in a folder that holds one ends the app here, before Hydra writes anything."""
    try:
        continued = RunFolder(output_dir).continues(resume, auto_resume)
    except DwimlError as e:
        sys.exit(f"dwiml-train: error: {e}")
    return CONFIG_DIR if _START.writer and not continued else None


def log_file(output_dir: str) -> str:
    """The job log's file: ``train.log`` in the run folder (the null device on the processes that do
    not write the run folder)."""
    return str(Path(output_dir) / LOG) if _START.writer else os.devnull


def register_resolvers() -> None:
    """The resolvers of ``conf/train.yaml``. The folder names are cached in the config, so the jobs of
    a sweep started in other processes keep the launcher's (as Hydra's ``${now:}``)."""
    OmegaConf.register_new_resolver("dwiml_run_dir", run_dir, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("dwiml_sweep_dir", sweep_dir, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("dwiml_output_subdir", output_subdir, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("dwiml_log_file", log_file, replace=True)
