"""Fixtures: tiny real files (NIfTI, TRK, HDF5) written with nibabel, dipy and dwiml itself;
training through Hydra's compose API."""
from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from dipy.io.stateful_tractogram import Origin, Space, StatefulTractogram
from dipy.io.streamline import save_tractogram
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from dwiml.config.schema import register_configs
from dwiml.data.builtin import phantom_hdf5
from dwiml.data.hdf5 import create_hdf5, load_groups_config
from dwiml.training.run import train

register_configs()  # as the training app does

SHAPE = (12, 10, 8)
# Anisotropic voxels, a flipped first axis and a translation: conventions must hold anyway.
AFFINE = np.array([[-1.5, 0, 0, 20.0], [0, 2.0, 0, -11.0], [0, 0, 2.5, 3.0], [0, 0, 0, 1]])
SUBJECTS = {"training": ["s1", "s2", "s3"], "validation": ["s4"], "testing": ["s5"]}


def random_streamlines(rng: np.random.Generator, nb: int, shape=SHAPE) -> list[np.ndarray]:
    """Smooth random curves in voxel coordinates (centre origin), inside the volume."""
    lines = []
    for _ in range(nb):
        n = int(rng.integers(5, 30))
        start = rng.uniform(1, np.array(shape) - 2)
        steps = np.cumsum(rng.normal(0, 0.15, (n, 3)), axis=0) + rng.normal(0, 0.4, 3)
        lines.append(np.clip(start + np.cumsum(steps, axis=0) * 0.3, 0, np.array(shape) - 1).astype(np.float32))
    return lines


def write_subject(folder: Path, rng: np.random.Generator, nb_streamlines: int = 40,
                  affine: np.ndarray = AFFINE) -> None:
    folder.mkdir(parents=True)
    data = rng.normal(size=SHAPE + (4,)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, affine), folder / "input.nii.gz")
    nib.save(nib.Nifti1Image(rng.normal(size=SHAPE).astype(np.float32), affine), folder / "extra.nii.gz")
    nib.save(nib.Nifti1Image((rng.random(SHAPE) > 0.3).astype(np.uint8), affine), folder / "mask.nii.gz")
    ref = nib.load(folder / "input.nii.gz")
    for name, nb in (("a", nb_streamlines // 2), ("b", nb_streamlines - nb_streamlines // 2)):
        sft = StatefulTractogram(random_streamlines(rng, nb), ref, Space.VOX, origin=Origin.NIFTI)
        (folder / "bundles").mkdir(exist_ok=True)
        save_tractogram(sft, str(folder / "bundles" / f"{name}.trk"))


GROUPS = {
    "input": {"type": "volume", "files": ["input.nii.gz", "extra.nii.gz"], "standardization": "none"},
    "mask": {"type": "volume", "files": ["mask.nii.gz"]},
    "streamlines": {"type": "streamlines", "files": ["bundles/*.trk"]},
}


@pytest.fixture(scope="session")
def subjects_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("subjects")
    rng = np.random.default_rng(0)
    for names in SUBJECTS.values():
        for name in names:
            write_subject(root / name, rng)
    (root / "groups.yaml").write_text(yaml.safe_dump(GROUPS))
    for subset, names in SUBJECTS.items():
        (root / f"{subset}.txt").write_text("\n".join(names) + "\n")
    return root


@pytest.fixture(scope="session")
def hdf5_path(subjects_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hdf5") / "data.hdf5"
    return create_hdf5(subjects_dir, load_groups_config(subjects_dir / "groups.yaml"), out,
                       SUBJECTS["training"], SUBJECTS["validation"], SUBJECTS["testing"])


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    phantom_hdf5(cache, nb_subjects=3, seed=1234)
    return cache


def compose_run(cache_dir: Path, run_dir: Path, overrides: list[str]):
    phantom = [f"dataset.cache_dir={cache_dir}", "dataset.nb_subjects=3"]
    base = ["trainer.progress_bar=false", *([] if "dataset=hdf5" in overrides else phantom)]
    with initialize_config_module("dwiml.conf", version_base="1.3"):
        cfg = compose("train", overrides=base + overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return cfg


def run_training(cache_dir: Path, run_dir: Path, overrides: list[str]) -> float:
    run_dir.mkdir(parents=True, exist_ok=True)
    return train(compose_run(cache_dir, run_dir, overrides))


def metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))
