"""The generic trainer: epochs of training and validation, checkpoints, best model, metrics.

It knows nothing of models or data formats: a batch goes to ``step(model, batch)``, which
returns ``(mean loss, number of points)``.
"""
from __future__ import annotations

import csv
import itertools
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from dwiml import __version__
from dwiml.errors import DwimlError
from dwiml.models.io import save_model
from dwiml.training.checkpoint import load_checkpoint, rng_states, save_checkpoint, set_rng_states
from dwiml.training.loggers import NoLogger

METRICS = "metrics.csv"
METRIC_COLUMNS = ("epoch", "train_loss", "valid_loss", "learning_rate", "grad_norm", "epoch_seconds")
BEST_MODEL = "best_model"
log = logging.getLogger(__name__)


class Trainer:
    """Trains ``model`` with ``step`` on ``train_loader``, validates on ``valid_loader``."""

    def __init__(self, model: nn.Module, model_config: dict,
                 optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
                 step: Callable, train_loader: torch.utils.data.DataLoader,
                 valid_loader: torch.utils.data.DataLoader | None, run_dir: str | Path,
                 logger: NoLogger | None = None, device: str = "cpu", max_epochs: int = 10,
                 max_batches_per_epoch_training: int | None = None,
                 max_batches_per_epoch_validation: int | None = None,
                 patience: int | None = None, patience_delta: float = 1e-6,
                 clip_grad_norm: float | None = None, progress_bar: bool = True):
        self.device = torch.device(device)
        self.model, self.model_config = model.to(self.device), model_config
        self.optimizer = optimizer(self.model.parameters())
        self.step, self.train_loader, self.valid_loader = step, train_loader, valid_loader
        self.run_dir = Path(run_dir)
        self.logger = logger or NoLogger()
        self.max_epochs = max_epochs
        self.max_batches = {"train": max_batches_per_epoch_training, "valid": max_batches_per_epoch_validation}
        self.patience, self.patience_delta = patience, patience_delta
        self.clip_grad_norm, self.progress_bar = clip_grad_norm, progress_bar
        self.epoch = 0
        self.best_loss, self.best_epoch, self.bad_epochs = math.inf, 0, 0
        self.logger_key: str | None = None

    def resume(self) -> None:
        """Continue from the run folder's checkpoint."""
        state = load_checkpoint(self.run_dir)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = state["epoch"]
        self.best_loss, self.best_epoch, self.bad_epochs = state["best_loss"], state["best_epoch"], state["bad_epochs"]
        self.logger_key = state["logger_key"]
        set_rng_states(state["rng"])
        self.train_loader.sampler.load_state_dict(state["sampler"])
        _truncate_metrics(self.run_dir / METRICS, self.epoch)
        log.info("resumed %s after epoch %d (best valid loss %.6g at epoch %d)",
                 self.run_dir, self.epoch, self.best_loss, self.best_epoch)

    def fit(self, config: dict | None = None) -> float:
        """Run epochs until ``max_epochs`` or patience; return the best validation loss."""
        self.logger_key = self.logger.start(self.run_dir, config or {}, self.logger_key)
        try:
            while self.epoch < self.max_epochs and not self._out_of_patience():
                self._run_epoch(self.epoch + 1)
        finally:
            self.logger.end()
        return self.best_loss

    def _run_epoch(self, epoch: int) -> None:
        start = time.perf_counter()
        self.train_loader.sampler.set_epoch(epoch)
        train_loss, grad_norm = self._train_one_epoch(epoch)
        valid_loss = self._validate(epoch) if self.valid_loader is not None else train_loss
        metrics = {"epoch": epoch, "train_loss": train_loss, "valid_loss": valid_loss,
                   "learning_rate": self.optimizer.param_groups[0]["lr"], "grad_norm": grad_norm,
                   "epoch_seconds": time.perf_counter() - start}
        self.epoch = epoch
        if valid_loss < self.best_loss - self.patience_delta:
            self.best_loss, self.best_epoch, self.bad_epochs = valid_loss, epoch, 0
            save_model(self.model, self.model_config, self.run_dir / BEST_MODEL)
        else:
            self.bad_epochs += 1
        _append_metrics(self.run_dir / METRICS, metrics)
        self.logger.log_metrics(metrics, epoch)
        save_checkpoint(self.run_dir, self._state())
        log.info("epoch %d: train loss %.6g, valid loss %.6g, %.1f s%s", epoch, train_loss, valid_loss,
                 metrics["epoch_seconds"], " (best)" if self.best_epoch == epoch else "")

    def _train_one_epoch(self, epoch: int) -> tuple[float, float]:
        self.model.train()
        total, points, norms = 0.0, 0, []
        for batch in self._batches(self.train_loader, "train", epoch):
            self.optimizer.zero_grad(set_to_none=True)
            loss, n = self.step(self.model, batch)
            _check_finite(loss, epoch)
            loss.backward()
            max_norm = self.clip_grad_norm if self.clip_grad_norm else math.inf
            norms.append(float(nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)))
            self.optimizer.step()
            total, points = total + float(loss.detach()) * n, points + n
        if points == 0:
            raise DwimlError("the training set gave no batch: check the training subjects and streamline group")
        return total / points, sum(norms) / len(norms)

    @torch.no_grad()
    def _validate(self, epoch: int) -> float:
        self.model.eval()
        total, points = 0.0, 0
        for batch in self._batches(self.valid_loader, "valid", epoch):
            loss, n = self.step(self.model, batch)
            total, points = total + float(loss.detach()) * n, points + n
        return total / points if points else math.nan

    def _batches(self, loader: torch.utils.data.DataLoader, phase: str, epoch: int) -> Iterable:
        limit = self.max_batches[phase]
        batches = itertools.islice(loader, limit)
        return tqdm(batches, desc=f"epoch {epoch} {phase}", leave=False, disable=not self.progress_bar)

    def _out_of_patience(self) -> bool:
        if self.patience is not None and self.bad_epochs >= self.patience:
            log.info("early stopping: no improvement for %d epochs (best epoch %d)", self.bad_epochs, self.best_epoch)
            return True
        return False

    def _state(self) -> dict:
        return {"epoch": self.epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "best_loss": self.best_loss, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
                "rng": rng_states(), "sampler": self.train_loader.sampler.state_dict(),
                "logger_key": self.logger_key, "dwiml_version": __version__}


def _check_finite(loss: torch.Tensor, epoch: int) -> None:
    if not torch.isfinite(loss):
        raise DwimlError(f"the training loss is {float(loss)} at epoch {epoch}; the last checkpoint is kept")


def _append_metrics(path: Path, metrics: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(metrics)


def _truncate_metrics(path: Path, last_epoch: int) -> None:
    """Drop rows after the checkpoint's epoch (written before a crash, redone on resume)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= last_epoch]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
