"""From a composed config to a trained model: build the components, hand them to the trainer.

Data flows one way: config -> dataset, samplers, loaders, model, optimizer, step, logger ->
trainer -> run folder.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dwiml.config.build import build
from dwiml.config.keys import check_keys
from dwiml.config.validate import check_config
from dwiml.config.schema import PhantomDatasetConfig
from dwiml.data.dataset import MultiSubjectDataset, SubjectSet
from dwiml.data.input_spec import InputSpec
from dwiml.errors import DwimlError
from dwiml.evaluation.generation import GenerationValidation
from dwiml.models.io import build_model
from dwiml.run_folder import RunFolder
from dwiml.training import distributed
from dwiml.training.next_steps import next_steps
from dwiml.training.stopping import ignore_stop_signals
from dwiml.training.trainer import Trainer
from dwiml.trust import check_loaded, targets_of

# Keys that may differ when a run continues (resume= or trainer.auto_resume=true): they change where
# and how fast it runs, or how long, never what it computes. Every other key must equal the saved config.
RESUMABLE = ("resume", "trainer.auto_resume", "trainer.max_epochs", "trainer.patience", "trainer.max_minutes",
             "trainer.checkpoint_every_minutes", "trainer.checkpoint_every_batches", "trainer.progress_bar",
             "trainer.plot_every_epochs", "dataset.hdf5_path", "dataset.cache_dir", "dataset.lazy",
             "dataset.cache_bytes", "device", "num_workers", "logger")
log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> float:
    """Train as configured in the current Hydra run folder; return the best validation loss."""
    check_keys(cfg)
    check_config(cfg)
    run_dir, overrides = Path(HydraConfig.get().runtime.output_dir), HydraConfig.get().overrides.task
    continued = RunFolder(run_dir).continues(cfg.resume, cfg.trainer.auto_resume)
    if continued:
        cfg = continued_config(cfg, run_dir, overrides)
        if distributed.is_main():
            RunFolder(run_dir).save_continuation(cfg, overrides)
    trainer = build_trainer(cfg, run_dir)
    best = trainer.fit(config=OmegaConf.to_container(cfg, resolve=True), resume=continued)
    log.info("best %s %.6g at epoch %d; model in %s", trainer.early_stopping.monitor, best, trainer.best_epoch,
             RunFolder(run_dir).best_model)
    lines = next_steps(run_dir, cfg.get("demo", False), cfg.dataset._target_ == PhantomDatasetConfig._target_)
    if lines and distributed.is_main():
        log.info("\n".join(lines))  # one record: the commands start their own lines, ready to copy
    return best


def build_trainer(cfg: DictConfig, run_dir: Path) -> Trainer:
    """Every component of a composed config, handed to the trainer."""
    _seed_everything(cfg.seed)
    dataset: MultiSubjectDataset = build(cfg.dataset)
    if len(dataset.training) == 0:
        raise DwimlError(f"{dataset.hdf5_path}: no training subjects")
    if distributed.is_main():
        RunFolder(run_dir).write_dataset(dataset.hdf5_path)
    train_loader = _data_loader(cfg, dataset.training, shuffle=True)
    valid_loader = _data_loader(cfg, dataset.validation, shuffle=False) if len(dataset.validation) else None
    device = f"cuda:{distributed.local_rank()}" if distributed.world_size() > 1 and cfg.device == "cuda" else cfg.device
    step = build(cfg.step, dataset=dataset, device=device)
    spec = step.input_spec(cfg.loader.streamline_group, train_loader.dataset.resampling)
    model_config = OmegaConf.to_container(cfg.model, resolve=True)
    model_config["input_size"] = step.input_size
    return build(cfg.trainer, _partial_=True)(  # partial: components stay Python objects
        model=build_model(model_config), model_config=model_config, input_spec=spec, optimizer=build(cfg.optim),
        scheduler=build(cfg.scheduler), step=step, train_loader=train_loader, valid_loader=valid_loader,
        run_dir=run_dir, logger=build(cfg.logger), device=device,
        gv=_generation_validation(cfg, dataset, spec, device))


def _generation_validation(cfg: DictConfig, dataset: MultiSubjectDataset, spec: InputSpec | None,
                           device: str) -> GenerationValidation | None:
    """The gv component, tracking with the model's inputs (None without ``gv``)."""
    if cfg.gv is None:
        return None
    if spec is None:
        raise DwimlError(f"gv: the generation-validation phase tracks, which needs step=one_input: a model of an "
                         f"input volume (this run's step, {cfg.step._target_}, gives its model none)")
    return build(cfg.gv, _partial_=True)(dataset=dataset, spec=spec, device=device)


def continued_config(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> DictConfig:
    """The config of a run that continues: with ``resume=``, the saved one with this command's overrides;
    with ``trainer.auto_resume=true``, this command's. Either is refused, naming the keys, when it
    differs from the saved config elsewhere than in :data:`RESUMABLE`."""
    saved = saved_config(run_dir, targets_of(OmegaConf.to_container(cfg, resolve=False)))
    if cfg.resume is None:
        new = cfg
    else:
        new = OmegaConf.create(saved)
        for key in {override.split("=", 1)[0].lstrip("+~") for override in overrides}:
            OmegaConf.update(new, key, OmegaConf.select(cfg, key), force_add=True)
    changed = [f"{key} (saved {old!r}, now {value!r})"
               for key, old, value in _changes(saved, OmegaConf.to_container(new, resolve=False))
               if not any(key == k or key.startswith(f"{k}.") for k in RESUMABLE)]
    if changed:
        how = f"resume={cfg.resume}" if cfg.resume is not None else "trainer.auto_resume=true"
        raise DwimlError(f"{how}: this command changes {', '.join(changed)} of the run in {run_dir} (saved in "
                         f"{RunFolder(run_dir).config}); a continued run may change only {', '.join(RESUMABLE[2:])}")
    return new


def saved_config(run_dir: Path, named: set[str]) -> dict:
    """A run folder's saved config, read as data and checked (:func:`dwiml.trust.check_loaded`)."""
    path = RunFolder(run_dir).config
    if not path.is_file():
        raise DwimlError(f"{run_dir} holds a run but no saved config {path}")
    try:
        saved = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise DwimlError(f"{path}: not YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(saved, dict):
        raise DwimlError(f"{path}: not a dwiml training config")
    check_loaded(saved, path, named)
    return saved


def _changes(old: Any, new: Any, key: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` wherever two plain configs differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [change for k in sorted(set(old) | set(new), key=str)
                for change in _changes(old.get(k), new.get(k), f"{key}.{k}" if key else str(k))]
    return [] if old == new else [(key, old, new)]


def _data_loader(cfg: DictConfig, subset: SubjectSet, shuffle: bool) -> torch.utils.data.DataLoader:
    group = cfg.loader.streamline_group
    settings = OmegaConf.to_container(cfg.sampler, resolve=True)
    validation_batch_size = settings.pop("validation_batch_size")  # the sampler takes one batch size
    if not shuffle and validation_batch_size is not None:
        settings["batch_size"] = validation_batch_size
    sampler = build(settings, subset=subset, streamline_group=group, shuffle=shuffle,
                    rank=distributed.rank(), world_size=distributed.world_size())
    loader = build(cfg.loader, subset=subset, augment=shuffle)
    # Its own generator: starting an epoch leaves the global RNG (dropout's) untouched.
    return torch.utils.data.DataLoader(loader, sampler=sampler, batch_size=None, num_workers=cfg.num_workers,
                                       collate_fn=_as_is, persistent_workers=cfg.num_workers > 0,
                                       worker_init_fn=ignore_stop_signals,
                                       generator=torch.Generator().manual_seed(cfg.seed))


def _as_is(batch):
    """The loader already returns a whole batch."""
    return batch


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
