"""Experiment loggers beside the local files (metrics.csv and train.log are always written).

A logger has ``start(run_dir, config, key) -> key``, ``log_metrics(metrics, epoch)`` and
``end()``. The key identifies the remote experiment; the trainer stores it in the
checkpoint so a resumed run continues the same experiment. API keys are read from the
environment by comet_ml itself and never written anywhere by dwiml. comet_ml's automatic logging
and its error reports (to Sentry) are off unless the environment turns them on, and an offline
experiment records no environment details: an offline run makes no connection at all.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from dwiml.errors import DwimlError
from dwiml.run_folder import RunFolder

COMET_DEFAULTS = {"COMET_DISABLE_AUTO_LOGGING": "1", "COMET_ERROR_TRACKING_ENABLE": "0"}


class NoLogger:
    """Local files only."""

    def start(self, run_dir: Path, config: dict, key: str | None) -> str | None:
        return key

    def log_metrics(self, metrics: dict, epoch: int) -> None:
        pass

    def end(self) -> None:
        pass


class CometLogger(NoLogger):
    """comet.ml, online (needs ``COMET_API_KEY``) or offline (an archive in the run folder)."""

    def __init__(self, offline: bool, project_name: str = "dwiml", workspace: str | None = None):
        self.project_name, self.workspace, self.offline = project_name, workspace, offline
        self.experiment = None

    def start(self, run_dir: Path, config: dict, key: str | None) -> str:
        for name, value in COMET_DEFAULTS.items():  # read when comet_ml is imported
            os.environ.setdefault(name, value)
        try:
            import comet_ml
        except ImportError:
            raise DwimlError("logger=comet needs comet_ml, an optional dependency: "
                             "pip install 'dwiml[comet]'") from None

        kwargs = {"project_name": self.project_name, "workspace": self.workspace}
        if self.offline:  # without environment details: comet_ml probes the network for them (IP, cloud metadata)
            kwargs.update(offline_directory=str(RunFolder(run_dir).comet), log_env_details=False)
            self.experiment = (comet_ml.ExistingOfflineExperiment(previous_experiment=key, **kwargs)
                               if key else comet_ml.OfflineExperiment(**kwargs))
        else:
            if not os.environ.get("COMET_API_KEY"):
                raise DwimlError("logger=comet needs the environment variable COMET_API_KEY "
                                 "(or use logger=comet_offline)")
            self.experiment = (comet_ml.ExistingExperiment(previous_experiment=key, **kwargs)
                               if key else comet_ml.Experiment(**kwargs))
        self.experiment.log_parameters(_flatten(config))
        return self.experiment.get_key()

    def log_metrics(self, metrics: dict, epoch: int) -> None:
        self.experiment.log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, epoch=epoch)

    def end(self) -> None:
        if self.experiment is not None:
            self.experiment.end()


class TensorBoardLogger(NoLogger):
    """TensorBoard event files in ``<run_dir>/tensorboard/`` (view with ``tensorboard --logdir``)."""

    def __init__(self) -> None:
        self.log_dir: Path | None = None
        self.config: dict = {}
        self.writer = None

    def start(self, run_dir: Path, config: dict, key: str | None) -> str | None:
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError:
            raise DwimlError("logger=tensorboard needs the tensorboard package: "
                             "pip install 'dwiml[tensorboard]'") from None
        self.log_dir, self.config = RunFolder(run_dir).tensorboard, config
        return key

    def log_metrics(self, metrics: dict, epoch: int) -> None:
        if self.writer is None:  # opened at the first epoch logged: a resumed run drops later, redone steps
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=epoch)
            self.writer.add_text("config", f"```\n{yaml.safe_dump(self.config, sort_keys=False)}```", epoch)
        for name, value in metrics.items():
            if name != "epoch":
                self.writer.add_scalar(name, value, epoch)
        self.writer.flush()

    def end(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Loggers(NoLogger):
    """Several loggers at once (e.g. comet.ml and TensorBoard); the run's key is the first one returned."""

    def __init__(self, loggers: dict[str, NoLogger]):
        self.loggers = list(loggers.values())

    def start(self, run_dir: Path, config: dict, key: str | None) -> str | None:
        keys = [logger.start(run_dir, config, key) for logger in self.loggers]
        return next((k for k in keys if k is not None), None)

    def log_metrics(self, metrics: dict, epoch: int) -> None:
        for logger in self.loggers:
            logger.log_metrics(metrics, epoch)

    def end(self) -> None:
        for logger in self.loggers:
            logger.end()


def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
