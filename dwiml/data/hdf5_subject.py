"""One subject's files read into the arrays of its HDF5 groups, and groups written back to files.

:func:`read_subject` runs in worker processes during :func:`dwiml.data.hdf5.create_hdf5`; it never
touches the HDF5 file. :func:`save_group` writes a group as NIfTI or as a tractogram (used by
``--save-intermediate`` and by ``dwiml-hdf5-extract``).
"""
from __future__ import annotations

import functools
import glob
import json
import logging
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from dipy.io.stateful_tractogram import StatefulTractogram
from dipy.io.streamline import save_tractogram
from dipy.tracking.streamlinespeed import compress_streamlines, length, set_number_of_points
from nibabel.streamlines import ArraySequence

from dwiml.data import coords
from dwiml.data.input_spec import check_declaration, declaration_attrs
from dwiml.data.readers import TRACTOGRAM_EXTENSIONS, VOLUME_EXTENSIONS, load_nifti, load_tractogram_on, read_data
from dwiml.errors import DwimlError

log = logging.getLogger(__name__)

RESAMPLING_KEYS = ("step_size_mm", "nb_points", "compress_mm")
STD_EPSILON = 1e-6


class MissingFileError(DwimlError):
    """A file of a group is missing (a subject may then be skipped, see ``enforce_files_presence``)."""


@dataclass
class GroupArrays:
    """One HDF5 group in memory: its attributes and its datasets (names may contain ``/``)."""

    attrs: dict[str, Any]
    datasets: dict[str, np.ndarray]


def read_subject(subject_dir: Path, groups_config: dict) -> dict[str, GroupArrays]:
    """Read, check, standardize and resample every group of one subject.

    All file patterns are expanded first, so a missing file is reported before any heavy work.
    The first file of the first volume group is the subject's reference grid.
    """
    for name, group in groups_config.items():
        for key in ("files", "std_mask", "connectivity_matrix", "connectivity_labels"):
            if group.get(key):
                _expand(subject_dir, _where(subject_dir, name), group[key])
    first = next(n for n, g in groups_config.items() if g["type"] == "volume")
    reference = _Reference(first, _expand(subject_dir, "", groups_config[first]["files"])[0],
                           _where(subject_dir, first))
    return {name: (_read_volume_group if group["type"] == "volume" else _read_streamline_group)(
        subject_dir, name, group, reference) for name, group in groups_config.items()}


def check_output_path(group: GroupArrays, path: Path) -> None:
    """An error when ``path``'s extension cannot hold ``group``; a warning when .tck drops dps/dpp."""
    kind = group.attrs["type"]
    extensions = VOLUME_EXTENSIONS if kind == "volume" else TRACTOGRAM_EXTENSIONS
    if not path.name.endswith(extensions):
        raise DwimlError(f"{path}: a {kind} group is written to {' or '.join(extensions)}")
    if path.name.endswith(".tck") and any(k.startswith("data_per_") for k in group.datasets):
        log.warning("%s: .tck files hold no data_per_streamline/data_per_point; they are not written", path)


def save_group(group: GroupArrays, path: Path) -> None:
    """Write a volume group to NIfTI, or a streamline group to .trk/.tck/.trx (dps/dpp included).

    The extension of ``path`` chooses the format (see :func:`check_output_path`).
    """
    if group.attrs["type"] == "volume":
        nib.save(nib.Nifti1Image(group.datasets["data"], np.asarray(group.attrs["affine"])), path)
    else:
        save_tractogram(streamlines_to_sft(group), str(path), bbox_valid_check=False)


def streamlines_to_sft(group: GroupArrays) -> StatefulTractogram:
    """A streamline group as a dipy StatefulTractogram in dwiml's space."""
    a, d = group.attrs, group.datasets
    reference = (np.asarray(a["affine"]), np.asarray(a["dimensions"]), np.asarray(a["voxel_sizes"]),
                 str(a["voxel_order"]))
    lengths = d["lengths"]
    dps = {k.split("/", 1)[1]: v for k, v in d.items() if k.startswith("data_per_streamline/")}
    dpp = {k.split("/", 1)[1]: _array_sequence(v, lengths) for k, v in d.items() if k.startswith("data_per_point/")}
    return StatefulTractogram(_array_sequence(d["points"], lengths), reference, coords.SPACE, origin=coords.ORIGIN,
                              data_per_streamline=dps, data_per_point=dpp)


@dataclass
class _Reference:
    """The grid every file of a subject must match: the first file of the first volume group."""

    group: str
    path: Path
    where: str

    @functools.cached_property
    def image(self) -> nib.Nifti1Image:
        return load_nifti(self.path, self.where)


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _where(subject_dir: Path, group: str) -> str:
    return f"subject '{subject_dir.name}', group '{group}'"


def _expand(subject_dir: Path, where: str, patterns: str | list[str]) -> list[Path]:
    """Files matching glob patterns (one, or a list; relative to the subject folder), each pattern's
    matches sorted."""
    files: list[Path] = []
    for pattern in _as_list(patterns):
        matches = sorted(glob.glob(str(subject_dir / pattern)))
        if not matches:
            raise MissingFileError(f"{where}: no file {subject_dir / pattern}")
        files.extend(Path(m) for m in matches)
    return files


def _relative(files: list[Path], subject_dir: Path) -> str:
    return json.dumps([str(f.relative_to(subject_dir)) for f in files])


def _load_image(path: Path, grid: nib.Nifti1Image, where: str) -> nib.Nifti1Image:
    """Load a NIfTI and check it lies on ``grid`` (voxel sizes, shape, affine)."""
    img = load_nifti(path, where)
    sizes, grid_sizes = coords.voxel_sizes(img.affine), coords.voxel_sizes(grid.affine)
    if not np.allclose(sizes, grid_sizes, atol=1e-4):
        raise DwimlError(f"{where}: {path} has voxel sizes {sizes.round(4).tolist()} but "
                         f"{grid.get_filename()} has {grid_sizes.round(4).tolist()}")
    if img.shape[:3] != grid.shape[:3]:
        raise DwimlError(f"{where}: {path} has shape {img.shape[:3]} but {grid.get_filename()} has {grid.shape[:3]}")
    if not np.allclose(img.affine, grid.affine, atol=1e-4):
        raise DwimlError(f"{where}: the affine of {path} differs from the affine of {grid.get_filename()}")
    return img


def _read_volume_group(subject_dir: Path, name: str, group: dict, reference: _Reference) -> GroupArrays:
    where = _where(subject_dir, name)
    files = _expand(subject_dir, where, group["files"])
    if name != reference.group:
        _load_image(files[0], reference.image, f"{where} vs group '{reference.group}'")
    first = load_nifti(files[0], where)
    arrays, replaced = zip(*(_read_finite(f, first, where, group.get("nan_to")) for f in files))
    mode = group.get("standardization", "none")
    mask = None
    if mode != "none" and group.get("std_mask"):
        masks = _expand(subject_dir, where, group["std_mask"])
        mask = np.any([(_read_finite(f, first, where, group.get("nan_to"))[0] > 0).any(axis=-1) for f in masks],
                      axis=0)
    if mode == "per_file":
        data = np.concatenate([standardize(a, mask, per_channel=False, where=where) for a in arrays], axis=-1)
    else:
        data = np.concatenate(arrays, axis=-1)
        if mode != "none":
            data = standardize(data, mask, per_channel=mode == "independent", where=where)
    check_declaration(group, where, data.shape[-1])
    attrs = dict(type="volume", affine=first.affine, voxel_sizes=coords.voxel_sizes(first.affine),
                 nb_features=data.shape[-1], standardization=mode, files=_relative(files, subject_dir),
                 **declaration_attrs(group))
    if group.get("nan_to") is not None:
        attrs["non_finite_replaced"] = int(np.any(replaced, axis=0).sum())  # voxels, in any file
    return GroupArrays(attrs, {"data": data})


def _read_finite(path: Path, grid: nib.Nifti1Image, where: str,
                 nan_to: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The ``(X, Y, Z, F)`` float32 data of a NIfTI on ``grid``, and its ``(X, Y, Z)`` voxels that held NaN or
    Inf: an error naming their number, or (with ``nan_to``) those values replaced by ``nan_to``."""
    data = read_data(_load_image(path, grid, where), where)
    bad = ~np.isfinite(data)
    voxels = bad.any(axis=-1)
    if voxels.any() and nan_to is None:
        raise DwimlError(f"{where}: {path} has {int(voxels.sum())} voxel(s) with NaN or Inf values "
                         "(set nan_to: 0 in the group to replace them)")
    data[bad] = nan_to if nan_to is not None else 0
    return data, voxels


def standardize(data: np.ndarray, mask: np.ndarray | None, per_channel: bool, where: str = "") -> np.ndarray:
    """``(data - mean) / std`` with mean and std taken inside ``mask`` (default: non-zero voxels).

    ``per_channel`` gives each channel its own mean and std. Voxels that are zero in every
    channel (background) stay 0. A std below 1e-6 is taken as 1.
    """
    nonzero = np.any(data != 0, axis=-1)
    mask = nonzero if mask is None else mask
    if not mask.any():
        raise DwimlError(f"{where}: the standardization mask is empty")
    inside = data[mask].astype(np.float64)
    axis = 0 if per_channel else None
    mean, std = inside.mean(axis=axis), inside.std(axis=axis)
    out = ((data - mean) / np.where(std < STD_EPSILON, 1.0, std)).astype(np.float32)
    out[~nonzero] = 0
    return out


def _read_streamline_group(subject_dir: Path, name: str, group: dict, reference: _Reference) -> GroupArrays:
    """The group's tractograms concatenated; empty ones contribute nothing and are counted (``empty_files``)."""
    where = _where(subject_dir, name)
    files = _expand(subject_dir, where, group["files"])
    loaded = [_load_tractogram(f, reference, group, where) for f in files]
    sft = functools.reduce(operator.add, [t for t in loaded if len(t)] or loaded[:1])
    sft, nb_removed = _remove_out_of_bounds(sft)
    if nb_removed and not group.get("remove_invalid"):
        raise DwimlError(f"{where}: {nb_removed} streamline(s) of {[str(f) for f in files]} leave the volume of "
                         f"{reference.path} (set remove_invalid: true in the group to drop them)")
    if (sft.streamlines._lengths < 2).any():
        raise DwimlError(f"{where}: {int((sft.streamlines._lengths < 2).sum())} streamline(s) with fewer "
                         f"than 2 points in {[str(f) for f in files]}")
    sft = _resample(sft, group)
    lengths_mm = length(sft.streamlines).astype(np.float32) if len(sft) else np.zeros(0, np.float32)  # in RASMM
    coords.to_dwiml_space(sft)
    lengths = np.asarray(sft.streamlines._lengths, dtype=np.int64)
    datasets = {"points": np.asarray(sft.streamlines.get_data(), dtype=np.float32).reshape(-1, 3),
                "offsets": np.cumsum(lengths) - lengths, "lengths": lengths, "lengths_mm": lengths_mm}
    datasets.update({f"data_per_streamline/{k}": np.asarray(v) for k, v in sft.data_per_streamline.items()})
    datasets.update({f"data_per_point/{k}": np.asarray(v.get_data()) for k, v in sft.data_per_point.items()})
    affine, dimensions, voxel_sizes, voxel_order = sft.space_attributes
    attrs = dict(type="streamlines", affine=affine, dimensions=np.asarray(dimensions),
                 voxel_sizes=np.asarray(voxel_sizes), voxel_order="".join(voxel_order),
                 files=_relative(files, subject_dir), empty_files=sum(len(t) == 0 for t in loaded),
                 resampling=json.dumps({k: group[k] for k in RESAMPLING_KEYS if group.get(k) is not None}))
    if group.get("remove_invalid"):
        attrs["removed_invalid"] = nb_removed
    if group.get("connectivity_matrix"):
        _add_connectivity(subject_dir, group, reference, where, attrs, datasets)
    return GroupArrays(attrs, datasets)


def _load_tractogram(path: Path, reference: _Reference, group: dict, where: str) -> StatefulTractogram:
    """Load one tractogram on the reference grid, keeping only the requested dps/dpp keys (an empty one
    gets them empty)."""
    sft = load_tractogram_on(path, reference.image, where)  # streamlines leaving it: see _remove_out_of_bounds
    points = sft.streamlines.get_data()
    if not np.isfinite(points).all():
        raise DwimlError(f"{where}: {path} has {int((~np.isfinite(points)).any(axis=-1).sum())} point(s) "
                         "with NaN or Inf coordinates")
    kept = []
    for kind, data in (("dps", sft.data_per_streamline), ("dpp", sft.data_per_point)):
        keys = _as_list(group.get(f"{kind}_keys") or [])
        missing = [k for k in keys if k not in data]
        if missing and len(sft):
            raise DwimlError(f"{where}: {path} has no {kind} key(s) {missing} (it has {sorted(data.keys())})")
        empty = np.zeros((0, 1), np.float32) if kind == "dps" else ArraySequence()
        kept.append({k: data[k] if k in data else empty for k in keys})
    sft.to_rasmm()
    return StatefulTractogram.from_sft(sft.streamlines, sft, data_per_streamline=kept[0], data_per_point=kept[1])


def _remove_out_of_bounds(sft: StatefulTractogram) -> tuple[StatefulTractogram, int]:
    """The streamlines with every point inside the volume (the rule of dipy's bounding-box check:
    voxel coordinates, corner origin, from 0 to the dimensions), and how many were dropped."""
    sft.to_vox()
    sft.to_corner()
    lengths = sft.streamlines._lengths
    points = sft.streamlines.get_data().reshape(-1, 3)
    outside = ((points < 0) | (points > np.asarray(sft.dimensions))).any(axis=1)
    invalid = np.bincount(np.repeat(np.arange(len(lengths)), lengths), weights=outside,
                          minlength=len(lengths)) > 0
    return sft[np.flatnonzero(~invalid)], int(invalid.sum())


def _resample(sft: StatefulTractogram, group: dict) -> StatefulTractogram:
    """Resample in RAS+ mm (so steps and tolerances are true millimetres), or return ``sft`` unchanged."""
    sft.to_rasmm()
    lines = sft.streamlines
    if not len(lines):
        return sft
    if group.get("nb_points"):
        lines = set_number_of_points(lines, int(group["nb_points"]))
    elif group.get("compress_mm"):
        lines = compress_streamlines(lines, tol_error=float(group["compress_mm"]))
    elif group.get("step_size_mm"):
        lines = _resample_step(lines, float(group["step_size_mm"]))
    else:
        return sft
    return StatefulTractogram.from_sft(lines, sft, data_per_streamline=sft.data_per_streamline)


def _resample_step(lines: ArraySequence, step_size_mm: float) -> ArraySequence:
    """Each streamline to ``max(2, round(length / step) + 1)`` equally spaced points (one dipy call per count)."""
    counts = np.maximum(2, np.round(length(lines) / step_size_mm).astype(np.int64) + 1)
    starts = np.cumsum(counts) - counts
    packed = np.empty((int(counts.sum()), 3), dtype=np.float32)
    for n in np.unique(counts):
        ids = np.flatnonzero(counts == n)
        resampled = set_number_of_points(lines[ids], int(n)).get_data().reshape(len(ids), n, 3)
        packed[(starts[ids, None] + np.arange(n)).ravel()] = resampled.reshape(-1, 3)
    return _array_sequence(packed, counts)


def _add_connectivity(subject_dir: Path, group: dict, reference: _Reference, where: str,
                      attrs: dict, datasets: dict) -> None:
    """The connectivity reference: a square matrix plus a label volume or a number of blocs per axis."""
    path = _expand(subject_dir, where, [group["connectivity_matrix"]])[0]
    try:
        matrix = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DwimlError(f"{where}: {path} is not a .npy matrix ({e})") from None
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise DwimlError(f"{where}: connectivity matrix {path} must be square, got shape {matrix.shape}")
    datasets["connectivity_matrix"] = matrix
    if group.get("connectivity_labels"):
        labels_path = _expand(subject_dir, where, [group["connectivity_labels"]])[0]
        labels, _ = _read_finite(labels_path, reference.image, where, None)
        if labels.shape[-1] != 1:
            raise DwimlError(f"{where}: connectivity labels {labels_path} must be 3D, got shape {labels.shape}")
        labels = labels[..., 0].astype(np.int32)
        if labels.max() > len(matrix):
            raise DwimlError(f"{where}: {labels_path} has label {labels.max()} but the matrix {path} "
                             f"has only {len(matrix)} rows")
        attrs["connectivity_type"] = "labels"
        datasets["connectivity_labels"] = labels
    else:
        nb_blocs = np.broadcast_to(np.asarray(group["connectivity_nb_blocs"], dtype=np.int64), (3,))
        if int(np.prod(nb_blocs)) != len(matrix):
            raise DwimlError(f"{where}: connectivity matrix {path} has {len(matrix)} rows but "
                             f"connectivity_nb_blocs {nb_blocs.tolist()} makes {int(np.prod(nb_blocs))} blocs")
        attrs["connectivity_type"] = "blocs"
        attrs["connectivity_nb_blocs"] = nb_blocs


def _array_sequence(packed: np.ndarray, lengths: np.ndarray) -> ArraySequence:
    """Packed rows and per-sequence lengths as an ArraySequence (no copy; none is fine)."""
    sequence = ArraySequence()
    sequence._data, sequence._lengths = np.asarray(packed), np.asarray(lengths, dtype=np.int64)
    sequence._offsets = np.cumsum(sequence._lengths) - sequence._lengths
    return sequence
