"""The built-in default data: the synthetic phantom, generated once into a cache folder.

The phantom is written as ordinary per-subject files (NIfTI, bval/bvec, .trk), then its
HDF5 is built from them by the same code as real data (:func:`dwiml.data.hdf5.create_hdf5`).
"""
from __future__ import annotations

import logging
from pathlib import Path

from dwiml.atomic import atomic_folder
from dwiml.data.dataset import MultiSubjectDataset
from dwiml.data.hdf5 import SUBSETS, create_hdf5, load_groups_config, read_subject_list
from dwiml.data.phantom import PHANTOM_VERSION, make_phantom

log = logging.getLogger(__name__)


def phantom_hdf5(cache_dir: str | Path, nb_subjects: int = 5, seed: int = 1234) -> Path:
    """Path of the phantom's HDF5 in ``cache_dir``, generating it the first time."""
    folder = Path(cache_dir).expanduser() / f"phantom-v{PHANTOM_VERSION}-n{nb_subjects}-s{seed}"
    hdf5_path = folder / "phantom.hdf5"
    if hdf5_path.is_file():
        return hdf5_path
    log.info("generating the phantom (%d subjects, seed %d) into %s", nb_subjects, seed, folder)
    with atomic_folder(folder, replace=False) as tmp:  # another process may generate it at the same time
        subjects = phantom_subjects_dir(tmp / hdf5_path.name)
        make_phantom(subjects, nb_subjects=nb_subjects, seed=seed)
        create_hdf5(subjects, load_groups_config(subjects / "groups_config.yaml"), tmp / hdf5_path.name,
                    *(read_subject_list(subjects / f"{s}_subjects.txt") for s in SUBSETS))
    return hdf5_path


def phantom_subjects_dir(hdf5_path: str | Path) -> Path:
    """The folder of the phantom's per-subject files (see :func:`dwiml.data.phantom.write_subject`)
    beside its HDF5."""
    return Path(hdf5_path).parent / "subjects"


def phantom_selection_hdf5(cache_dir: str | Path, nb_subjects: int = 5, seed: int = 1234) -> Path:
    """An HDF5 of the phantom's training and validation subjects only (built once, next to
    :func:`phantom_hdf5`'s): what model selection may see, with no testing subject in it."""
    subjects = phantom_subjects_dir(phantom_hdf5(cache_dir, nb_subjects, seed))
    path = subjects.parent / "selection.hdf5"
    if not path.is_file():
        create_hdf5(subjects, load_groups_config(subjects / "groups_config.yaml"), path,
                    read_subject_list(subjects / "training_subjects.txt"),
                    read_subject_list(subjects / "validation_subjects.txt"), [])
    return path


def phantom_dataset(cache_dir: str | Path, nb_subjects: int = 5, seed: int = 1234,
                    lazy: bool = False, cache_bytes: int = 2**30) -> MultiSubjectDataset:
    """The phantom as a :class:`MultiSubjectDataset`."""
    return MultiSubjectDataset(phantom_hdf5(cache_dir, nb_subjects, seed), lazy=lazy, cache_bytes=cache_bytes)
