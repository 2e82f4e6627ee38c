"""Fixtures: tiny real files (NIfTI, TRK, HDF5) written with nibabel, dipy and dwiml itself."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from dwiml.data.builtin import phantom_hdf5
from dwiml.data.hdf5 import create_hdf5, load_groups_config
from helpers import GROUPS, SUBJECTS, run_training, write_subject
from helpers.hostile import EVIL, TINY, write_evil_module


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


@pytest.fixture(scope="session")
def trusted_run(cache_dir, tmp_path_factory) -> Path:
    """A run folder trained for two batches (``TINY``), copied to make hostile ones (tests/helpers/hostile.py)."""
    run = tmp_path_factory.mktemp("trusted") / "run"
    run_training(cache_dir, run, TINY)
    return run


@pytest.fixture
def side_effects(tmp_path, monkeypatch) -> Path:
    """``tmp_path/effects``: where every hostile payload would write; importable ``dwiml_evil_module`` writes
    there too. Checked empty, and the module unimported, after the test."""
    effects, modules = tmp_path / "effects", tmp_path / "modules"
    effects.mkdir(), modules.mkdir()
    write_evil_module(modules, effects)
    monkeypatch.syspath_prepend(str(modules))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(modules), os.environ.get("PYTHONPATH", "")]))
    yield effects
    assert EVIL not in sys.modules and list(effects.iterdir()) == []
