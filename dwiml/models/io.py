"""Save a model as weights + its own config; rebuild it from that folder alone.

A model folder holds ``model.pt`` (a state dict, read with ``weights_only=True``) and
``model_config.json`` (the ``_target_`` config that builds the model). Every
``_target_`` in that config must name a ``torch.nn.Module`` class, so a model folder
cannot make dwiml call arbitrary functions.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from hydra.utils import get_object
from torch import nn

from dwiml.config.build import build
from dwiml.errors import DwimlError

WEIGHTS = "model.pt"
CONFIG = "model_config.json"


def build_model(config: dict) -> nn.Module:
    """Instantiate a model from its plain-dict config, after checking its targets."""
    _check_targets(config)
    return build(config, _convert_="all")


def save_model(model: nn.Module, config: dict, folder: str | Path) -> None:
    """Write ``folder`` atomically: a temporary folder, then a rename over the old one."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(model.state_dict(), tmp / WEIGHTS)
    (tmp / CONFIG).write_text(json.dumps(config, indent=2))
    replace_folder(tmp, folder)


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model from a model folder (e.g. ``best_model/``), with no training config."""
    folder = Path(folder)
    if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
        raise DwimlError(f"{folder} is not a model folder (needs {WEIGHTS} and {CONFIG})")
    model = build_model(json.loads((folder / CONFIG).read_text()))
    model.load_state_dict(torch.load(folder / WEIGHTS, map_location=device, weights_only=True))
    return model.to(device)


def replace_folder(new: Path, folder: Path) -> None:
    """Move ``new`` to ``folder``; the old ``folder`` is kept as ``<folder>.old`` until then."""
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(new, folder)
    shutil.rmtree(old, ignore_errors=True)


def _check_targets(config: object) -> None:
    if isinstance(config, dict):
        target = config.get("_target_")
        if target is not None:
            try:
                obj = get_object(target)
            except Exception as e:  # hydra raises a plain ImportError/ValueError mix
                raise DwimlError(f"model config: cannot import _target_ '{target}' ({e})") from None
            if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
                raise DwimlError(f"model config: _target_ '{target}' is not a torch.nn.Module")
        for value in config.values():
            _check_targets(value)
    elif isinstance(config, list):
        for value in config:
            _check_targets(value)
