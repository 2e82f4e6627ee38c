"""The checkpoint: everything needed to continue a run, written atomically.

``checkpoint/state.pt`` holds plain tensors and Python values only, read back with
``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from dwiml.atomic import atomic_folder
from dwiml.errors import DwimlError
from dwiml.run_folder import CHECKPOINT, STATE, RunFolder


def rng_states() -> dict:
    """torch, numpy and Python global RNG states as weights-only-loadable values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)}


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


def save_checkpoint(run_dir: Path, state: dict, write_model: Callable[[Path], None] | None = None) -> None:
    """Write ``checkpoint/`` atomically: ``state.pt``, and the files ``write_model`` puts beside it."""
    with atomic_folder(RunFolder(run_dir).checkpoint) as tmp:
        torch.save(state, tmp / STATE)
        if write_model is not None:
            write_model(tmp)


def find_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint file of a run folder, or its previous one if a save was cut short."""
    return RunFolder(run_dir).checkpoint_state()


def load_checkpoint(run_dir: Path) -> dict:
    path = find_checkpoint(run_dir)
    if path is None:
        raise DwimlError(f"{run_dir} holds no checkpoint ({CHECKPOINT}/{STATE})")
    return torch.load(path, map_location="cpu", weights_only=True)
