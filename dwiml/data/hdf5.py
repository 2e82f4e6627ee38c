"""The dwiml HDF5 format: build one from per-subject NIfTI volumes and tractograms, and open one.

Layout::

    /                     attrs: format="dwiml", format_version, training_subjects,
                                 validation_subjects, testing_subjects (JSON lists),
                                 groups_config (JSON), space="vox", origin="nifti",
                                 creation (JSON: compression, enforce_files_presence, skipped_subjects,
                                 removed_invalid: {subject: {group: streamlines dropped}})
    /<subject>/<volume group>       attrs: type="volume", affine, voxel_sizes, nb_features,
                                           standardization, files, and as declared in the groups
                                           config: sh_basis, sh_order, channel_names (JSON)
        data        (X, Y, Z, F) float32, chunked in blocks of 16^3 voxels x F channels
    /<subject>/<streamline group>   attrs: type="streamlines", affine, dimensions, voxel_sizes,
                                           voxel_order, files, resampling (JSON, e.g. {"step_size_mm": 1.0}),
                                           removed_invalid (with remove_invalid: streamlines dropped)
        points      (N, 3) float32, dwiml voxel space (see dwiml.data.coords)
        offsets     (B,) int64, lengths (B,) int64, lengths_mm (B,) float32
        data_per_streamline/<key>   (B, ...)   kept dps_keys
        data_per_point/<key>        (N, ...)   kept dpp_keys, packed like points
        connectivity_matrix         (M, M)     optional, with attr connectivity_type="labels" and
        connectivity_labels         (X, Y, Z) int32, or connectivity_type="blocs" and attr
                                               connectivity_nb_blocs (3 ints, M = their product)
                                   (how points map to rows: dwiml.data.connectivity)

Per-subject reading lives in :mod:`dwiml.data.hdf5_subject`; inspection in :mod:`dwiml.data.hdf5_tools`.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import h5py
import numpy as np
import yaml
from tqdm import tqdm

from dwiml.atomic import atomic_path
from dwiml.data.hdf5_subject import RESAMPLING_KEYS, GroupArrays, MissingFileError, read_subject, save_group
from dwiml.data.input_spec import DECLARATION_KEYS, check_declaration
from dwiml.errors import DwimlError

log = logging.getLogger(__name__)

FORMAT = "dwiml"
FORMAT_VERSION = 1
SUBSETS = ("training", "validation", "testing")
EMPTY_SET_CONSEQUENCES = {"training": "this file cannot train a model",
                          "validation": "training on it monitors train_loss (no validation loss, no "
                                        "generation validation)"}
STANDARDIZATIONS = ("none", "all", "independent", "per_file")
COMPRESSIONS = ("gzip", "lzf")
CHUNK_VOXELS = 16
GROUP_KEYS = {
    "volume": {"type", "files", "standardization", "std_mask", *DECLARATION_KEYS},
    "streamlines": {"type", "files", "dps_keys", "dpp_keys", "remove_invalid", *RESAMPLING_KEYS,
                    "connectivity_matrix", "connectivity_labels", "connectivity_nb_blocs"},
}


def load_groups_config(path: str | Path) -> dict:
    """Read and check a groups config (YAML or JSON): ``{group: {type, files, ...}}``."""
    path = Path(path)
    if not path.is_file():
        raise DwimlError(f"groups config {path} does not exist")
    with open(path) as f:
        config = json.load(f) if path.suffix == ".json" else yaml.safe_load(f)
    check_groups_config(config, f"groups config {path}")
    return config


def check_groups_config(config: dict, where: str = "groups config") -> None:
    """Check group types, keys and values; the error names the group and the key."""
    if not isinstance(config, dict) or not config:
        raise DwimlError(f"{where}: expected a mapping of group names to groups")
    for name, group in config.items():
        here = f"{where}, group '{name}'"
        if not isinstance(group, dict) or group.get("type") not in GROUP_KEYS:
            raise DwimlError(f"{here}: 'type' must be 'volume' or 'streamlines'")
        files = group.get("files")
        names = [files] if isinstance(files, str) else files if isinstance(files, list) else None
        if not names or not all(isinstance(f, str) and f for f in names):
            raise DwimlError(f"{here}: 'files' must be a file name (or glob pattern) or a non-empty list of them")
        unknown = set(group) - GROUP_KEYS[group["type"]]
        if unknown:
            raise DwimlError(f"{here}: unknown key(s) {sorted(unknown)}; allowed: {sorted(GROUP_KEYS[group['type']])}")
        if group.get("standardization", "none") not in STANDARDIZATIONS:
            raise DwimlError(f"{here}: standardization must be one of {STANDARDIZATIONS}")
        resampling = [k for k in RESAMPLING_KEYS if group.get(k) is not None]
        if len(resampling) > 1:
            raise DwimlError(f"{here}: give at most one of {resampling}")
        if resampling and not (isinstance(group[resampling[0]], (int, float)) and group[resampling[0]] > 0):
            raise DwimlError(f"{here}: {resampling[0]} must be a positive number")
        if resampling and group.get("dpp_keys"):
            raise DwimlError(f"{here}: dpp_keys cannot be kept when resampling ({resampling[0]})")
        if group["type"] == "streamlines":
            if not isinstance(group.get("remove_invalid", False), bool):
                raise DwimlError(f"{here}: remove_invalid must be true or false")
            _check_connectivity(group, here)
        else:
            check_declaration(group, here)
    if not any(g["type"] == "volume" for g in config.values()):
        raise DwimlError(f"{where}: needs at least one volume group (the reference space)")


def _check_connectivity(group: dict, where: str) -> None:
    given = [k for k in ("connectivity_labels", "connectivity_nb_blocs") if group.get(k) is not None]
    if bool(group.get("connectivity_matrix")) != (len(given) == 1):
        raise DwimlError(f"{where}: connectivity_matrix goes with exactly one of connectivity_labels or "
                         f"connectivity_nb_blocs (got matrix: {bool(group.get('connectivity_matrix'))}, {given})")
    blocs = group.get("connectivity_nb_blocs")
    if blocs is not None and not (np.size(blocs) in (1, 3) and np.all(np.asarray(blocs) > 0)):
        raise DwimlError(f"{where}: connectivity_nb_blocs must be a positive int or 3 positive ints")


def read_subject_list(path: str | Path) -> list[str]:
    """Subject names, one per line (blank lines and ``#`` comments ignored)."""
    path = Path(path)
    if not path.is_file():
        raise DwimlError(f"subject list {path} does not exist")
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def create_hdf5(subjects_dir: str | Path, groups_config: dict, out_path: str | Path,
                training: list[str], validation: list[str], testing: list[str], *,
                enforce_files_presence: bool = True, compression: str | None = None, processes: int = 1,
                save_intermediate: str | Path | None = None) -> Path:
    """Build a dwiml HDF5 (layout in the module docstring); return its path.

    Subjects are read by ``processes`` worker processes (spawned: a calling script needs the
    ``if __name__ == "__main__"`` guard) and written by this one, as h5py writes from one process.
    The file is written under a temporary name and renamed only when complete.
    With ``enforce_files_presence=False``, a subject missing a file of a group is skipped with a
    warning and left out of its subject list (listed in the ``creation`` attribute). An empty training or
    validation set is reported with a warning. Compression:
    ``"gzip"``, ``"lzf"`` or None. ``save_intermediate``: a folder receiving each subject's groups
    as ``<subject>/<group>.nii.gz`` / ``.trk``.
    """
    check_groups_config(groups_config)
    if compression not in (*COMPRESSIONS, None):
        raise DwimlError(f"compression must be one of {COMPRESSIONS} or none, got '{compression}'")
    subjects_dir, out_path = Path(subjects_dir), Path(out_path)
    subsets = dict(zip(SUBSETS, (training, validation, testing)))
    _check_subjects(subjects_dir, subsets)
    names = [name for subset in subsets.values() for name in subset]
    read = partial(_read_or_skip, groups_config=groups_config, enforce_files_presence=enforce_files_presence)
    skipped: dict[str, str] = {}
    removed: dict[str, dict[str, int]] = {}
    with atomic_path(out_path) as tmp_path:
        with _mapped(read, [subjects_dir / n for n in names], processes) as results, \
                h5py.File(tmp_path, "w") as h5:
            for name, result in zip(names, tqdm(results, total=len(names), desc="subjects", disable=None)):
                if isinstance(result, str):
                    log.warning("skipping subject '%s': %s", name, result)
                    skipped[name] = result
                    continue
                for group_name, group in result.items():
                    if group.attrs.get("removed_invalid"):
                        log.warning("subject '%s', group '%s': removed %d streamline(s) leaving the volume",
                                    name, group_name, group.attrs["removed_invalid"])
                        removed.setdefault(name, {})[group_name] = int(group.attrs["removed_invalid"])
                    write_group(h5.require_group(name), group_name, group, compression)
                    if save_intermediate is not None:
                        _save_intermediate(Path(save_intermediate) / name, group_name, group)
            if len(skipped) == len(names):
                raise DwimlError(f"every subject was skipped for missing files: {skipped}")
            stored = {subset: [s for s in subjects if s not in skipped] for subset, subjects in subsets.items()}
            write_root_attrs(h5, groups_config, stored, {"compression": compression, "skipped_subjects": skipped,
                                                         "enforce_files_presence": enforce_files_presence,
                                                         "removed_invalid": removed})
    for subset, consequence in EMPTY_SET_CONSEQUENCES.items():
        if not stored[subset]:
            log.warning("%s: no %s subjects%s: %s", out_path, subset, " left" if subsets[subset] else "", consequence)
    return out_path


def _read_or_skip(subject_dir: Path, groups_config: dict, enforce_files_presence: bool) -> dict | str:
    """A subject's groups, or the reason it is skipped (a missing file, when presence is not enforced)."""
    try:
        return read_subject(subject_dir, groups_config)
    except MissingFileError as e:
        if enforce_files_presence:
            raise
        return str(e)


@contextmanager
def _mapped(function: Callable, items: list, processes: int) -> Iterator[Iterator]:
    """``function`` over ``items`` in order, in ``processes`` worker processes (in this one if 1)."""
    if processes <= 1 or len(items) <= 1:
        yield map(function, items)
        return
    processes = min(processes, len(items))
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        yield _in_order(pool, function, items, window=processes + 1)


def _in_order(pool, function: Callable, items: list, window: int) -> Iterator:
    """Results in order, with at most ``window`` subjects in flight (bounded memory, unlike ``imap``)."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.apply_async(function, (item,)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def write_root_attrs(h5: h5py.File, groups_config: dict, subsets: dict[str, list[str]], creation: dict) -> None:
    """The root attributes of a dwiml HDF5 (layout in the module docstring)."""
    h5.attrs.update(format=FORMAT, format_version=FORMAT_VERSION, space="vox", origin="nifti",
                    groups_config=json.dumps(groups_config), creation=json.dumps(creation))
    for subset, subjects in subsets.items():
        h5.attrs[f"{subset}_subjects"] = json.dumps(subjects)


def write_group(parent: h5py.Group, name: str, group: GroupArrays, compression: str | None) -> None:
    """One subject's group, volumes chunked in blocks for lazy reads."""
    out = parent.create_group(name)
    out.attrs.update(group.attrs)
    for key, array in group.datasets.items():
        chunks = None
        if key == "data":  # a volume: blocks suited to reading the bounding box of a batch's points
            chunks = (*(min(CHUNK_VOXELS, n) for n in array.shape[:3]), array.shape[3])
        out.create_dataset(key, data=array, chunks=chunks, compression=compression if array.size else None)


def _save_intermediate(folder: Path, name: str, group: GroupArrays) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_group(group, folder / f"{name}{'.nii.gz' if group.attrs['type'] == 'volume' else '.trk'}")


def open_any_hdf5(path: str | Path) -> h5py.File:
    """Open an HDF5 file for reading; a clear error when it is missing or not HDF5."""
    path = Path(path)
    if not path.is_file():
        raise DwimlError(f"HDF5 file {path} does not exist")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise DwimlError(f"{path} is not an HDF5 file ({e})") from None


def open_hdf5(path: str | Path) -> h5py.File:
    """Open a dwiml HDF5 for reading; a clear error when it is missing or not a dwiml file."""
    h5 = open_any_hdf5(path)
    if h5.attrs.get("format") != FORMAT:
        h5.close()
        raise DwimlError(f"{path} is not a dwiml HDF5 file (no format='{FORMAT}' attribute)")
    if int(h5.attrs["format_version"]) > FORMAT_VERSION:
        h5.close()
        raise DwimlError(f"{path} has format version {h5.attrs['format_version']}, newer than this dwiml")
    return h5


def subject_lists(h5: h5py.File) -> dict[str, list[str]]:
    """The training/validation/testing subject names stored in a dwiml HDF5."""
    return {subset: json.loads(h5.attrs[f"{subset}_subjects"]) for subset in SUBSETS}


def _check_subjects(subjects_dir: Path, subsets: dict[str, list[str]]) -> None:
    seen: dict[str, str] = {}
    for subset, names in subsets.items():
        for name in names:
            if name in seen:
                raise DwimlError(f"subject '{name}' is listed twice ({seen[name]} and {subset})")
            seen[name] = subset
            if not (subjects_dir / name).is_dir():
                raise DwimlError(f"subject '{name}' ({subset}) has no folder {subjects_dir / name}")
    if not seen:
        raise DwimlError("no subjects: the three subject lists are empty")
