"""Fixtures: tiny real files (NIfTI, TRK, HDF5) written with nibabel, dipy and dwiml itself."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from dipy.io.stateful_tractogram import Origin, Space, StatefulTractogram
from dipy.io.streamline import save_tractogram

from dwiml.data.builtin import phantom_hdf5
from dwiml.data.hdf5 import create_hdf5, load_groups_config

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
    """A cache folder holding the built-in phantom (3 subjects), as training runs find it."""
    cache = tmp_path_factory.mktemp("cache")
    phantom_hdf5(cache, nb_subjects=3, seed=1234)
    return cache
