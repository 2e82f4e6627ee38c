"""The generic trainer: epochs of training and validation, checkpoints, best model, metrics.

It knows nothing of models or data formats: a batch goes to ``step(model, batch)``, which
returns ``(mean loss, number of points)``. Read it top to bottom: ``fit`` runs epochs,
``_train_epoch`` runs batches, ``_train_batch`` is one forward/backward (and, every
``accumulate_grad_batches`` batches, one optimizer step), ``_end_epoch`` validates,
schedules, stops early and checkpoints.

**Exact resume.** A checkpoint holds everything the rest of the run depends on: model,
optimizer, scheduler, EMA weights, gradient scaler, early-stopping state, the position in
the epoch and the epoch's running sums, the sampler's state and every rank's
torch/numpy/python RNG states. It is written at the end of every epoch, every
``checkpoint_every_minutes`` or ``checkpoint_every_batches``, and before exiting on
SIGTERM/SIGUSR1 or after ``max_minutes``, always between two optimizer steps. A run
killed at any moment and resumed ends with the same weights, bit for bit on the CPU, as
if it had never stopped. Augmentations are drawn from each batch's own seed (see the
sampler), so DataLoader workers hold no RNG state that matters.

**Multi-process (DDP).** Under ``torchrun`` every rank trains on its own shard of each
epoch, gradients are averaged by DistributedDataParallel, per-batch numbers are gathered
every batch (one small collective that also shares stop and checkpoint decisions), and
only rank 0 writes to the run folder.

**Generation validation.** With a ``gv`` component (see
:mod:`dwiml.evaluation.generation`), the model also tracks at the end of the epochs where
``gv.due(epoch)``; its metrics go to ``gv_metrics.csv`` (rows on those epochs only) and to the
loggers. ``monitor`` may name one of them: the best model and early stopping then follow it,
updated on those epochs only (patience counts evaluations of the monitor).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import resource
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from dwiml import __version__
from dwiml.config.schema import TrainerConfig
from dwiml.data.input_spec import InputSpec
from dwiml.errors import DwimlError
from dwiml.models.io import save_model, write_model
from dwiml.ranges import check_all, rules_of
from dwiml.run_folder import RunFolder
from dwiml.training import distributed as dist
from dwiml.training.checkpoint import find_checkpoint, load_checkpoint, rng_states, save_checkpoint, set_rng_states
from dwiml.training.loggers import NoLogger
from dwiml.training.metrics_log import CsvLog
from dwiml.training.stopping import EarlyStopping, StopRequests
from dwiml.viz.plots import plot_metrics

if TYPE_CHECKING:
    from dwiml.evaluation.generation import GenerationValidation

METRIC_COLUMNS = ("epoch", "train_loss", "valid_loss", "learning_rate", "grad_norm", "epoch_seconds",
                  "grad_norm_clipped", "data_seconds", "compute_seconds", "peak_memory_mb")
BATCH_COLUMNS = ("epoch", "batch", "rank", "pass", "position", "loss", "points", "learning_rate",
                 "grad_norm", "grad_norm_clipped", "data_seconds", "compute_seconds")
PRECISIONS = {"32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
RESUMABLE_EXIT = 75  # EX_TEMPFAIL: stopped early with a checkpoint; run again with resume=<run_dir>
log = logging.getLogger(__name__)


def _check_autocast(model: nn.Module, device: torch.device, precision: str) -> None:
    """Refuse by name a precision that this device cannot run for the model's recurrent layers: on a CPU
    without bfloat16/float16 support in oneDNN (e.g. AVX2 only), an LSTM under autocast fails at its
    first batch."""
    lstms = [m for m in model.modules() if isinstance(m, nn.LSTM)]
    if PRECISIONS[precision] is None or device.type != "cpu" or not lstms:
        return
    probe = nn.LSTM(1, 1)
    try:
        with torch.autocast("cpu", dtype=PRECISIONS[precision]):
            probe(torch.zeros(1, 1, 1))
    except RuntimeError:
        raise DwimlError(f"trainer.precision={precision}: this CPU cannot run an LSTM in {precision} "
                         "(no oneDNN support); use trainer.precision=32 or a GPU") from None


class BatchRecord(NamedTuple):
    """What one rank knows after a training batch, gathered from every rank in one collective (as
    float64 values: the stop and checkpoint requests are 0 or 1, the grad norms NaN between optimizer steps)."""

    loss: float
    points: float
    data_seconds: float
    compute_seconds: float
    grad_norm: float
    grad_norm_clipped: float
    pass_index: float
    position: float
    stop: float
    checkpoint: float


class TrainingInterrupted(Exception):
    """The run stopped before its end (signal or wall-time budget) after writing a checkpoint."""


class Trainer:
    """Trains ``model`` with ``step`` on ``train_loader``, validates on ``valid_loader``."""

    def __init__(self, model: nn.Module, model_config: dict,
                 optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
                 step: Callable, train_loader: torch.utils.data.DataLoader,
                 valid_loader: torch.utils.data.DataLoader | None, run_dir: str | Path,
                 scheduler: Callable | None = None, logger: NoLogger | None = None, device: str = "cpu",
                 max_epochs: int = 10, max_batches_per_epoch_training: int | None = None,
                 max_batches_per_epoch_validation: int | None = None,
                 patience: int | None = 5, patience_delta: float = 1e-6,
                 monitor: str = "valid_loss", monitor_mode: str = "min",
                 clip_grad_norm: float | None = 5.0, accumulate_grad_batches: int = 1,
                 ema_decay: float | None = None, precision: str = "32", compile: bool = False,
                 strategy: str = "single", checkpoint_every_minutes: float | None = None,
                 checkpoint_every_batches: int | None = None, max_minutes: float | None = None,
                 auto_resume: bool = False, progress_bar: bool = True, plot_every_epochs: int | None = 1,
                 gv: GenerationValidation | None = None, input_spec: InputSpec | None = None):
        check_all(dict(max_epochs=max_epochs, max_batches_per_epoch_training=max_batches_per_epoch_training,
                       max_batches_per_epoch_validation=max_batches_per_epoch_validation, patience=patience,
                       patience_delta=patience_delta, monitor_mode=monitor_mode, clip_grad_norm=clip_grad_norm,
                       accumulate_grad_batches=accumulate_grad_batches, ema_decay=ema_decay, precision=precision,
                       strategy=strategy, checkpoint_every_minutes=checkpoint_every_minutes,
                       checkpoint_every_batches=checkpoint_every_batches, max_minutes=max_minutes,
                       plot_every_epochs=plot_every_epochs), rules_of(TrainerConfig), "trainer.".__add__)
        check_monitor(monitor, gv.columns if gv is not None else ())
        if strategy != "ddp" and dist.world_size() > 1:
            raise DwimlError(f"started as {dist.world_size()} processes (torchrun): use trainer.strategy=ddp")
        if valid_loader is None and monitor == "valid_loss":
            log.warning("no validation subjects: no valid_loss; the best model and early stopping follow train_loss")
            monitor = "train_loss"
        self.device = torch.device(device)
        self.model, self.model_config, self.input_spec = model.to(self.device), model_config, input_spec
        self.forward_model = dist.data_parallel(self.model, self.device) if dist.world_size() > 1 else self.model
        if compile:
            self.forward_model = torch.compile(self.forward_model)
        self.optimizer = optimizer(self.model.parameters())
        self.scheduler = scheduler(self.optimizer) if scheduler is not None else None
        self.ema = (AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
                    if ema_decay else None)
        self.autocast_dtype = PRECISIONS[precision]
        _check_autocast(self.model, self.device, precision)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")
        self.step, self.train_loader, self.valid_loader = step, train_loader, valid_loader
        self.run_dir = Path(run_dir)
        run = RunFolder(run_dir)
        self.logger = logger or NoLogger()
        self.max_epochs = max_epochs
        self.max_batches = {"train": max_batches_per_epoch_training, "valid": max_batches_per_epoch_validation}
        self.early_stopping = EarlyStopping(monitor, monitor_mode, patience, patience_delta)
        self.clip_grad_norm, self.accumulate = clip_grad_norm, accumulate_grad_batches
        self.checkpoint_every = {"minutes": checkpoint_every_minutes, "batches": checkpoint_every_batches}
        self.max_minutes, self.auto_resume, self.progress_bar = max_minutes, auto_resume, progress_bar
        self.plot_every_epochs = plot_every_epochs
        self._plotter = ThreadPoolExecutor(max_workers=1)  # draws beside training: no epoch waits for it
        self._plot: Future | None = None
        self.metrics = CsvLog(run.metrics, METRIC_COLUMNS)
        self.batch_metrics = CsvLog(run.batch_metrics, BATCH_COLUMNS)
        self.gv = gv
        self.gv_metrics = CsvLog(run.gv_metrics, ("epoch", *gv.columns)) if gv is not None else None
        self.best_model_dir = run.best_model
        self.epoch, self.batch_index, self.totals = 0, 0, _fresh_totals()  # epochs done, batches done in the next
        self.logger_key: str | None = None
        self._last_checkpoint = (time.monotonic(), 0)

    @property
    def best_epoch(self) -> int:
        return self.early_stopping.best_epoch

    def fit(self, config: dict | None = None, resume: bool = False) -> float:
        """Run epochs until ``max_epochs`` or patience; return the best value of the monitor.

        ``resume`` (or ``auto_resume``): continue the run folder's run, from its checkpoint if it has one,
        dropping the metrics rows of the work after it. Raises :class:`TrainingInterrupted` after
        checkpointing on a stop request."""
        if resume or self.auto_resume:
            if find_checkpoint(self.run_dir) is not None:
                self._load(load_checkpoint(self.run_dir))
            if dist.is_main():
                self._drop_discarded_rows()
        if dist.is_main():
            self.logger_key = self.logger.start(self.run_dir, config or {}, self.logger_key)
        try:
            with StopRequests(self.max_minutes) as stop:
                while self.epoch < self.max_epochs and not self.early_stopping.out_of_patience:
                    self._train_epoch(stop)
                    self._end_epoch()
        finally:
            self._plotter.shutdown(wait=True)
            if dist.is_main():
                self.logger.end()
        if self.plot_every_epochs and self.epoch and dist.is_main():
            plot_metrics(self.run_dir)  # every epoch drawn, whatever the background thread skipped
        if self.early_stopping.out_of_patience:
            log.info("early stopping: no improvement of %s for %d epochs (best epoch %d)",
                     self.early_stopping.monitor, self.early_stopping.bad_epochs, self.best_epoch)
        return self.early_stopping.best

    def _train_epoch(self, stop: StopRequests) -> None:
        sampler = self.train_loader.sampler
        sampler.set_epoch(self.epoch, self.max_batches["train"], start_batch=self.batch_index)
        nb_batches = self.batch_index + len(sampler)
        if nb_batches == 0:
            raise DwimlError("the training set gave no batch: check the training subjects and streamline group")
        self.model.train()
        self._last_checkpoint = (time.monotonic(), self.batch_index)
        batches = tqdm(self.train_loader, desc=f"epoch {self.epoch + 1} train", leave=False,
                       disable=not self.progress_bar or not dist.is_main())
        waiting = time.perf_counter()
        for batch in batches:
            data_seconds = time.perf_counter() - waiting
            optimizer_step = (self.batch_index + 1) % self.accumulate == 0 or self.batch_index + 1 == nb_batches
            stop_now, checkpoint_now = self._train_batch(batch, optimizer_step, data_seconds, stop)
            self.batch_index += 1
            self.totals["seconds"] += time.perf_counter() - waiting
            if stop_now or checkpoint_now:
                self._save()
            if stop_now:
                log.info("stopping (%s) at epoch %d, batch %d: checkpoint written, resume with resume=%s",
                         stop.reason, self.epoch + 1, self.batch_index, self.run_dir)
                raise TrainingInterrupted(stop.reason or "stop requested on another rank")
            waiting = time.perf_counter()

    def _train_batch(self, batch, optimizer_step: bool, data_seconds: float,
                     stop: StopRequests) -> tuple[bool, bool]:
        """Forward and backward; at an optimizer step, also clip, check and step.

        Returns whether every rank must now stop, or checkpoint (decided at optimizer steps only)."""
        start = time.perf_counter()
        no_sync = self.forward_model.no_sync() if dist.world_size() > 1 and not optimizer_step else contextlib.nullcontext()
        with no_sync:
            with self._autocast():
                loss, nb_points = self.step(self.forward_model, batch)
            self.scaler.scale(loss / self.accumulate).backward()
        norm = clipped = math.nan
        if optimizer_step:
            self.scaler.unscale_(self.optimizer)
            norm = float(nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm or math.inf))
            clipped = min(norm, self.clip_grad_norm) if self.clip_grad_norm else norm
        pass_index, position = self.train_loader.sampler.position_of(self.batch_index)
        mine = BatchRecord(float(loss.detach()), nb_points, data_seconds, time.perf_counter() - start, norm, clipped,
                           pass_index, position, optimizer_step and stop.reason is not None,
                           optimizer_step and self._checkpoint_due())
        ranks = [BatchRecord(*row) for row in
                 dist.all_gather(torch.tensor(mine, dtype=torch.float64, device=self.device)).tolist()]
        if not all(math.isfinite(r.loss) for r in ranks):
            raise DwimlError(f"the training loss is {[r.loss for r in ranks]} (per rank) at epoch {self.epoch + 1}, "
                             f"batch {self.batch_index + 1}; stopped, the last checkpoint is kept")
        if optimizer_step:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.update_parameters(self.model)
        self._record_batch(ranks)
        return any(r.stop for r in ranks), any(r.checkpoint for r in ranks)

    def _record_batch(self, ranks: list[BatchRecord]) -> None:
        """Add a batch to the epoch's sums and, on rank 0, one row per rank to the batch metrics."""
        t, main = self.totals, ranks[0]  # times: rank 0's; gradient norms: the same on every rank
        t["loss"] += sum(r.loss * r.points for r in ranks)
        t["points"] += sum(r.points for r in ranks)
        t["data_seconds"] += main.data_seconds
        t["compute_seconds"] += main.compute_seconds
        if not math.isnan(main.grad_norm):
            t["grad_norm"] += main.grad_norm
            t["grad_norm_clipped"] += main.grad_norm_clipped
            t["steps"] += 1
        if dist.is_main():
            lr = self.optimizer.param_groups[0]["lr"]
            self.batch_metrics.append(
                {"epoch": self.epoch + 1, "batch": self.batch_index, "rank": rank, "pass": int(r.pass_index),
                 "position": int(r.position), "loss": r.loss, "points": int(r.points), "learning_rate": lr,
                 "grad_norm": r.grad_norm, "grad_norm_clipped": r.grad_norm_clipped, "data_seconds": r.data_seconds,
                 "compute_seconds": r.compute_seconds}
                for rank, r in enumerate(ranks))

    def _end_epoch(self) -> None:
        """Validate, log the epoch, schedule the learning rate, keep the best model, checkpoint."""
        start = time.perf_counter()
        t, epoch = self.totals, self.epoch + 1
        train_loss = t["loss"] / t["points"]
        validated = {"valid_loss": self._validate()} if self.valid_loader is not None else {}
        steps = max(t["steps"], 1)
        metrics = {"epoch": epoch, "train_loss": train_loss, **validated,
                   "learning_rate": self.optimizer.param_groups[0]["lr"], "grad_norm": t["grad_norm"] / steps,
                   "epoch_seconds": t["seconds"] + time.perf_counter() - start,
                   "grad_norm_clipped": t["grad_norm_clipped"] / steps, "data_seconds": t["data_seconds"],
                   "compute_seconds": t["compute_seconds"], "peak_memory_mb": _peak_memory_mb(self.device)}
        generated = self._generation_validation(epoch)
        self.epoch, self.batch_index, self.totals = epoch, 0, _fresh_totals()
        monitored = {**metrics, **generated}.get(self.early_stopping.monitor)  # None: a gv metric, not this epoch
        if isinstance(self.scheduler, ReduceLROnPlateau):
            if monitored is not None:
                self.scheduler.step(monitored)
        elif self.scheduler is not None:
            self.scheduler.step()
        improved = monitored is not None and self.early_stopping.update(monitored, epoch)
        if dist.is_main():
            if improved:
                save_model(self._eval_model(), self.model_config, self.best_model_dir, self.input_spec)
            self.metrics.append([metrics])
            self.logger.log_metrics(metrics, epoch)
            if generated:
                self.gv_metrics.append([{"epoch": epoch, **generated}])
                self.logger.log_metrics(generated, epoch)
            if self.plot_every_epochs and epoch % self.plot_every_epochs == 0 and (self._plot is None or self._plot.done()):
                self._plot = self._plotter.submit(plot_metrics, self.run_dir)
        self._save()
        log.info("epoch %d: train loss %.6g%s, %.1f s (data %.1f s)%s%s", epoch, train_loss,
                 "".join(f", valid loss {v:.6g}" for v in validated.values()), metrics["epoch_seconds"],
                 metrics["data_seconds"],
                 "".join(f", {k} {v:.4g}" for k, v in generated.items()), " (best)" if improved else "")

    def _generation_validation(self, epoch: int) -> dict[str, float]:
        """The gv metrics of the validated weights at the end of ``epoch``, {} when the phase does
        not run then. Computed on rank 0, shared with the other ranks."""
        if self.gv is None or not self.gv.due(epoch):
            return {}
        metrics = self.gv(self._eval_model()) if dist.is_main() else None
        self.model.train()
        return dist.all_gather_objects(metrics)[0]

    @torch.no_grad()
    def _validate(self) -> float:
        """Mean loss per point over the validation batches of every rank (EMA weights if enabled)."""
        model = self._eval_model()
        model.eval()
        self.valid_loader.sampler.set_epoch(0, self.max_batches["valid"])
        sums = torch.zeros(2, dtype=torch.float64)
        culprits: set[str] = set()  # the subjects of this rank's batches whose loss is not finite
        for batch in tqdm(self.valid_loader, desc=f"epoch {self.epoch} valid", leave=False,
                          disable=not self.progress_bar or not dist.is_main()):
            with self._autocast():
                loss, nb_points = self.step(model, batch)
            if not math.isfinite(float(loss)):
                culprits.update(self.valid_loader.dataset.subset.subjects[i] for i in batch.subjects.unique().tolist())
            sums += torch.tensor([float(loss) * nb_points, nb_points], dtype=torch.float64)
        loss_sum, points = dist.all_gather(sums.to(self.device)).sum(0).tolist()
        self.model.train()
        if not math.isfinite(loss_sum):
            named = sorted(set().union(*dist.all_gather_objects(culprits)))
            raise DwimlError(f"the validation loss is {loss_sum / points} at epoch {self.epoch + 1}: a batch of "
                             f"validation subject(s) {', '.join(named)} gives a non-finite loss (NaN/Inf in their "
                             "data?); stopped, the last checkpoint is kept")
        return loss_sum / points if points else math.nan

    def _eval_model(self) -> nn.Module:
        """The weights that are validated and kept as the best model: the EMA ones when enabled."""
        return self.ema.module if self.ema is not None else self.model

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

    def _checkpoint_due(self) -> bool:
        seconds, batch = self._last_checkpoint
        minutes, batches = self.checkpoint_every["minutes"], self.checkpoint_every["batches"]
        return ((minutes is not None and time.monotonic() - seconds >= 60 * minutes)
                or (batches is not None and self.batch_index + 1 - batch >= batches))

    def _save(self) -> None:
        """Write the checkpoint (rank 0), with every rank's RNG states; check the replicas agree."""
        rng = dist.all_gather_objects(rng_states())
        weights = dist.all_gather_objects(_weights_sha256(self.model)) if dist.world_size() > 1 else []
        if len(set(weights)) > 1:
            raise DwimlError(f"the model replicas differ between ranks ({weights}): stopped")
        if dist.is_main():
            # with a model folder of the latest validated weights beside the state
            save_checkpoint(self.run_dir, self._state(rng, weights),
                            functools.partial(write_model, self._eval_model(), self.model_config, self.input_spec))
        dist.barrier()
        self._last_checkpoint = (time.monotonic(), self.batch_index)

    def _state(self, rng: list[dict], replica_weights: list[str]) -> dict:
        optional = {name: part.state_dict() for name, part in
                    (("scheduler", self.scheduler), ("ema", self.ema)) if part is not None}
        return {"epoch": self.epoch, "batch_index": self.batch_index, "totals": dict(self.totals),
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "early_stopping": self.early_stopping.state_dict(),
                "sampler": self.train_loader.sampler.state_dict(), "rng": rng, "world_size": dist.world_size(),
                "replica_weights_sha256": replica_weights, "logger_key": self.logger_key,
                "dwiml_version": __version__, **optional}

    def _drop_discarded_rows(self) -> None:
        """Keep the metrics rows of the work done up to the current position (the checkpoint's, or the start)."""
        for log_file in (self.metrics, self.gv_metrics):
            if log_file is not None:
                log_file.keep(lambda row: int(row["epoch"]) <= self.epoch)
        self.batch_metrics.keep(lambda row: int(row["epoch"]) <= self.epoch or
                                (int(row["epoch"]) == self.epoch + 1 and int(row["batch"]) < self.batch_index))

    def _load(self, state: dict) -> None:
        """Continue from a checkpoint."""
        if state["world_size"] != dist.world_size():
            raise DwimlError(f"resume: the run used {state['world_size']} processes, not {dist.world_size()}")
        if ("ema" in state) != (self.ema is not None) or ("scheduler" in state) != (self.scheduler is not None):
            raise DwimlError("resume: the checkpoint's EMA/scheduler do not match trainer.ema_decay/scheduler")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        for name, part in (("scheduler", self.scheduler), ("ema", self.ema)):
            if part is not None:
                part.load_state_dict(state[name])
        self.early_stopping.load_state_dict(state["early_stopping"])
        self.epoch, self.batch_index, self.totals = state["epoch"], state["batch_index"], state["totals"]
        self.train_loader.sampler.load_state_dict(state["sampler"])
        self.logger_key = state["logger_key"]
        set_rng_states(state["rng"][dist.rank()])
        log.info("resumed %s at epoch %d, batch %d (best %s %.6g at epoch %d)", self.run_dir, self.epoch + 1,
                 self.batch_index, self.early_stopping.monitor, self.early_stopping.best, self.best_epoch)


def check_monitor(monitor: str, gv_columns: tuple[str, ...] | None) -> None:
    """A one-line error when ``monitor`` is no metric of the run; ``gv_columns``: the metrics of its
    generation-validation phase, or None when it has one whose columns are not known yet (any ``gv_*``)."""
    if gv_columns is None and monitor.startswith("gv_"):
        return
    gv_columns = gv_columns or ()
    if monitor not in METRIC_COLUMNS[1:] + gv_columns:
        raise DwimlError(f"trainer.monitor='{monitor}' is not a logged metric: one of "
                         f"{METRIC_COLUMNS[1:] + gv_columns}" + ("" if gv_columns else " (gv=default adds gv_*)"))


def _fresh_totals() -> dict:
    """Running sums of an epoch (saved in mid-epoch checkpoints)."""
    return dict.fromkeys(("loss", "points", "grad_norm", "grad_norm_clipped", "steps", "data_seconds",
                          "compute_seconds", "seconds"), 0.0)


def _peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: allocated CUDA memory on a GPU, the process's peak resident size on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def _weights_sha256(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().flatten().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
