"""Save a model as weights + its own config + its input specification; rebuild it from that folder alone.

A model folder holds ``model.pt`` (a state dict, read with ``weights_only=True``),
``model_config.json`` (the ``_target_`` config that builds the model) and, for a model that takes
an input volume, ``input_spec.json`` (its :class:`~dwiml.data.input_spec.InputSpec`). A model folder
is data: its config may name only trusted classes (see :mod:`dwiml.trust`), checked before any
import, and each must be a ``torch.nn.Module`` class.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch
from hydra.utils import get_object
from torch import nn

from dwiml.atomic import atomic_folder
from dwiml.config.build import build
from dwiml.data.input_spec import InputSpec
from dwiml.errors import DwimlError
from dwiml.trust import check_loaded

WEIGHTS = "model.pt"
CONFIG = "model_config.json"
SPEC = "input_spec.json"


class TrainedModel(NamedTuple):
    """A model rebuilt from its folder, and what it eats (None for a model without an input volume)."""

    model: nn.Module
    spec: InputSpec | None


def build_model(config: dict) -> nn.Module:
    """Instantiate a model from its plain-dict config, after checking its targets are modules."""
    _check_targets(config)
    return build(config, _convert_="all")


def save_model(model: nn.Module, config: dict, folder: str | Path, spec: InputSpec | None = None) -> None:
    """Write the model folder ``folder`` atomically: a temporary folder, then a rename over the old one."""
    with atomic_folder(folder) as tmp:
        write_model(model, config, spec, tmp)


def write_model(model: nn.Module, config: dict, spec: InputSpec | None, folder: Path) -> None:
    """Write a model folder's files into the existing ``folder``."""
    torch.save(model.state_dict(), folder / WEIGHTS)
    (folder / CONFIG).write_text(json.dumps(config, indent=2))
    if spec is not None:
        (folder / SPEC).write_text(json.dumps(spec.to_dict(), indent=2))


def is_model_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds a model, or part of one (rather than, e.g., a run folder holding model folders)."""
    return (Path(folder) / CONFIG).is_file() or (Path(folder) / WEIGHTS).is_file()


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """Rebuild a model from a model folder (e.g. ``best_model/``), with no training config."""
    folder = Path(folder)
    if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
        raise DwimlError(f"{folder} is not a model folder (needs {WEIGHTS} and {CONFIG})")
    try:
        config = json.loads((folder / CONFIG).read_text())
    except ValueError as e:
        raise DwimlError(f"{folder / CONFIG}: not JSON ({e})") from None
    if not isinstance(config, dict):
        raise DwimlError(f"{folder / CONFIG}: not a model config (a JSON object with a _target_)")
    check_loaded(config, folder / CONFIG, own_interpolations=False)  # dwiml saves it resolved
    weights = _load_weights(folder / WEIGHTS, device)
    try:
        model = build_model(config)
    except DwimlError as e:
        raise DwimlError(f"{folder / CONFIG}: {e}") from None
    except Exception as e:  # a value of the wrong kind, caught by the class it configures
        raise DwimlError(f"{folder / CONFIG}: cannot build the model ({_first_line(e.__cause__ or e)})") from None
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:  # missing, unexpected or misshapen tensors
        raise DwimlError(f"{folder / WEIGHTS}: the weights do not fit the model of {CONFIG} "
                         f"({_first_line(e, 1)})") from None
    return TrainedModel(model.to(device), load_spec(folder))


def _load_weights(path: Path, device: str | torch.device) -> dict[str, torch.Tensor]:
    """A state dict, read with ``weights_only=True``; a one-line error naming the file otherwise."""
    if path.stat().st_size == 0:
        raise DwimlError(f"{path}: an empty file, not PyTorch weights")
    try:
        weights = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated or garbage files raise many types (zip, pickle, EOF, runtime)
        raise DwimlError(f"{path}: not a readable PyTorch weights file ({type(e).__name__}: "
                         f"{_first_line(e).split('. ')[0]})") from None
    if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in weights.items()):
        raise DwimlError(f"{path}: not a state dict (a mapping of parameter names to tensors), "
                         f"but a {type(weights).__name__}")
    return weights


def _first_line(error: Exception, line: int = 0) -> str:
    """A line of an exception's message (the first by default; torch's load errors put the cause second)."""
    lines = [text.strip() for text in str(error).splitlines() if text.strip()] or [type(error).__name__]
    return lines[min(line, len(lines) - 1)]


def load_spec(folder: str | Path) -> InputSpec | None:
    """The input specification of a model folder, None when it has none."""
    path = Path(folder) / SPEC
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text())
    except ValueError as e:
        raise DwimlError(f"{path}: not JSON ({e})") from None
    return InputSpec.from_dict(values, str(path))


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
