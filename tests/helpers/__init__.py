"""Helpers shared by the tests: tiny real files written with nibabel and dipy, and training
through Hydra's compose API or the real command line. Test modules import them from here only."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
from dipy.io.stateful_tractogram import Origin, Space, StatefulTractogram
from dipy.io.streamline import save_tractogram
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from dwiml.config.schema import register_configs
from dwiml.training.run import train

register_configs()  # as the training app does

ROOT = Path(__file__).resolve().parents[2]

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


def save_trk(path: Path, lines: list[np.ndarray], reference: Path) -> Path:
    """Streamlines given in dwiml voxel coordinates, saved as .trk on the grid of ``reference``."""
    sft = StatefulTractogram([np.asarray(s, dtype=np.float32) for s in lines], str(reference), Space.VOX,
                             origin=Origin.NIFTI)
    save_tractogram(sft, str(path), bbox_valid_check=False)
    return path


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


DWI_ML_SUBJECTS = {"training_subjs": ["subA", "subB"], "validation_subjs": ["subC"], "testing_subjs": []}


def write_dwi_ml_hdf5(path, rng) -> dict[str, list[np.ndarray]]:
    """dwi_ml's layout (peer notes, section 1.3): streamlines in voxel space, corner origin; returns
    each subject's streamlines in dwiml's convention (voxel centres at integers)."""
    config = {"input": {"type": "volume", "files": ["fodf.nii.gz"], "standardization": "all"},
              "streamlines": {"type": "streamlines", "files": ["tractograms/*.trk"], "dps_keys": "weight",
                              "connectivity_matrix": "m.npy", "connectivity_nb_blocs": [2, 1, 1]}}
    truth = {}
    with h5py.File(path, "w") as h5:
        h5.attrs["data_and_time"] = "02 December 2026 09:00:00"
        h5.attrs["groups_config"] = str(config)
        for key, names in DWI_ML_SUBJECTS.items():
            h5.attrs[key] = names
        h5.attrs["chosen_subjs"] = sum(DWI_ML_SUBJECTS.values(), [])
        h5.attrs["step_size"] = 1.0
        h5.attrs["nb_points"] = h5.attrs["compress"] = "Not defined by user"
        for name in h5.attrs["chosen_subjs"]:
            volume = h5.create_group(f"{name}/input")
            volume.create_dataset("data", data=rng.normal(size=SHAPE + (4,)).astype(np.float32))
            volume.attrs.update(type="volume", affine=AFFINE, voxres=np.abs(np.diag(AFFINE)[:3]), nb_features=4)
            lines = random_streamlines(rng, 30)
            truth[name] = lines
            lengths = np.array([len(s) for s in lines])
            group = h5.create_group(f"{name}/streamlines")
            group.attrs.update(type="streamlines", space="Space.VOX", origin="Origin.TRACKVIS", affine=AFFINE,
                               dimensions=np.array(SHAPE), voxel_sizes=np.abs(np.diag(AFFINE)[:3]),
                               voxel_order="LAS", connectivity_matrix_type="from_blocs",
                               connectivity_nb_blocs=[2, 1, 1])
            group.create_dataset("data", data=np.concatenate(lines) + 0.5)
            group.create_dataset("offsets", data=np.cumsum(lengths) - lengths)
            group.create_dataset("lengths", data=lengths)
            group.create_dataset("euclidean_lengths", data=[float(len(s)) for s in lines])
            group.create_dataset("data_per_streamline/weight", data=rng.random((30, 1)))
            group.create_dataset("connectivity_matrix", data=np.array([[False, True], [True, False]]))
    return truth


GROUPS = {
    "input": {"type": "volume", "files": ["input.nii.gz", "extra.nii.gz"], "standardization": "none"},
    "mask": {"type": "volume", "files": ["mask.nii.gz"]},
    "streamlines": {"type": "streamlines", "files": ["bundles/*.trk"]},
}


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

def cli(cwd: Path, cache_dir: Path, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real ``python train.py`` in ``cwd``."""
    env = {**os.environ, "DWIML_CACHE_DIR": str(cache_dir), "HYDRA_FULL_ERROR": "0"}
    phantom = [] if "dataset=hdf5" in overrides else ["dataset.nb_subjects=3"]
    args = [sys.executable, str(ROOT / "train.py"), *overrides, *phantom, "trainer.progress_bar=false"]
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def vmf_w_cdf(w: np.ndarray, kappa: float) -> np.ndarray:
    """CDF of w = mu.x under a von Mises-Fisher distribution on S^2 (density ~ exp(kappa w))."""
    return np.exp(kappa * (w - 1)) * -np.expm1(-kappa * (w + 1)) / -np.expm1(-2 * kappa)
