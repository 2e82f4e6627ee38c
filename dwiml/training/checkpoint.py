"""The checkpoint: everything needed to continue a run, written atomically.

``checkpoint/state.pt`` holds plain tensors and Python values only, read back with
``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import torch

from dwiml.errors import DwimlError
from dwiml.models.io import replace_folder

FOLDER = "checkpoint"
STATE = "state.pt"


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


def save_checkpoint(run_dir: Path, state: dict) -> None:
    tmp = run_dir / f"{FOLDER}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(state, tmp / STATE)
    replace_folder(tmp, run_dir / FOLDER)


def find_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint file of a run folder, or its previous one if a save was cut short."""
    for folder in (FOLDER, f"{FOLDER}.old"):
        if (run_dir / folder / STATE).is_file():
            return run_dir / folder / STATE
    return None


def load_checkpoint(run_dir: Path) -> dict:
    path = find_checkpoint(run_dir)
    if path is None:
        raise DwimlError(f"{run_dir} holds no checkpoint ({FOLDER}/{STATE})")
    return torch.load(path, map_location="cpu", weights_only=True)
