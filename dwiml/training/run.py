"""From a composed config to a trained model: build the components, hand them to the trainer.

Data flows one way: config -> dataset, samplers, loaders, model, optimizer, step, logger ->
trainer -> run folder.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dwiml.config.build import build
from dwiml.config.keys import check_keys
from dwiml.config.schema import PhantomDatasetConfig
from dwiml.data.dataset import MultiSubjectDataset, SubjectSet
from dwiml.data.input_spec import InputSpec
from dwiml.errors import DwimlError
from dwiml.evaluation.generation import GenerationValidation
from dwiml.models.io import build_model
from dwiml.run_folder import RunFolder
from dwiml.training import distributed
from dwiml.training.next_steps import next_steps
from dwiml.training.trainer import Trainer

# Keys that may change when a run is resumed; everything else is the run's saved config.
RESUMABLE_OVERRIDES = ("resume", "trainer.max_epochs", "trainer.patience", "trainer.progress_bar",
                       "trainer.max_minutes", "trainer.checkpoint_every_minutes", "trainer.auto_resume",
                       "dataset.hdf5_path", "dataset.cache_dir",
                       "dataset.lazy", "dataset.cache_bytes", "device", "num_workers", "logger")
log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> float:
    """Train as configured in the current Hydra run folder; return the best validation loss."""
    check_keys(cfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if cfg.resume is not None:
        cfg = resumed_config(cfg, run_dir, HydraConfig.get().overrides.task)
    trainer = build_trainer(cfg, run_dir)
    best = trainer.fit(config=OmegaConf.to_container(cfg, resolve=True), resume=cfg.resume is not None)
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


def resumed_config(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> DictConfig:
    """The run's saved config, with this command's overrides of the keys allowed on resume.

    Overriding another key is refused, unless the override repeats the saved value.
    """
    saved_path = RunFolder(run_dir).config
    if not saved_path.is_file():
        raise DwimlError(f"resume: {run_dir} has no saved config {saved_path}")
    saved = OmegaConf.load(saved_path)
    refused = [o for o in overrides if _override_key(o) not in RESUMABLE_OVERRIDES
               and OmegaConf.select(cfg, _override_key(o)) != OmegaConf.select(saved, _override_key(o))]
    if refused:
        raise DwimlError(f"resume: cannot override {', '.join(refused)} when resuming "
                         f"(allowed: {', '.join(RESUMABLE_OVERRIDES[1:])})")
    for key in {_override_key(o) for o in overrides}:
        OmegaConf.update(saved, key, OmegaConf.select(cfg, key), force_add=True)
    return saved


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


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
                                       generator=torch.Generator().manual_seed(cfg.seed))


def _as_is(batch):
    """The loader already returns a whole batch."""
    return batch


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
