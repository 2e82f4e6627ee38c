"""Fixtures: tiny real files (NIfTI, TRK, HDF5) written with nibabel, dipy and dwiml itself."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from dwiml.data.builtin import phantom_hdf5
from dwiml.data.hdf5 import create_hdf5, load_groups_config
from helpers import GROUPS, SUBJECTS, write_subject


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
