"""Build a dwiml HDF5 file from per-subject NIfTI volumes and tractograms, and open one.

Layout::

    /                     attrs: format="dwiml", format_version, training_subjects,
                                 validation_subjects, testing_subjects (JSON lists),
                                 groups_config (JSON), space="vox", origin="nifti"
    /<subject>/<volume group>       attrs: type="volume", affine, voxel_sizes, files
        data        (X, Y, Z, F) float32
    /<subject>/<streamline group>   attrs: type="streamlines", affine, dimensions, voxel_sizes,
                                           voxel_order, files
        points      (N, 3) float32, dwiml voxel space (see dwiml.data.coords)
        offsets     (B,) int64, lengths (B,) int64, lengths_mm (B,) float32
"""
from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import torch
import yaml
from dipy.io.streamline import load_tractogram
from tqdm import tqdm

from dwiml.data import coords, streamlines
from dwiml.errors import DwimlError

FORMAT = "dwiml"
FORMAT_VERSION = 1
SUBSETS = ("training", "validation", "testing")
STANDARDIZATIONS = ("none", "all", "independent", "per_file")
TRACTOGRAM_EXTENSIONS = (".trk", ".tck", ".trx")


def load_groups_config(path: str | Path) -> dict:
    """Read and check a groups config (YAML or JSON): ``{group: {type, files, ...}}``."""
    path = Path(path)
    if not path.is_file():
        raise DwimlError(f"groups config {path} does not exist")
    with open(path) as f:
        config = json.load(f) if path.suffix == ".json" else yaml.safe_load(f)
    if not isinstance(config, dict) or not config:
        raise DwimlError(f"groups config {path}: expected a mapping of group names to groups")
    for name, group in config.items():
        where = f"groups config {path}, group '{name}'"
        if not isinstance(group, dict) or group.get("type") not in ("volume", "streamlines"):
            raise DwimlError(f"{where}: 'type' must be 'volume' or 'streamlines'")
        if not group.get("files") or not isinstance(group["files"], list):
            raise DwimlError(f"{where}: 'files' must be a non-empty list")
        allowed = {"type", "files"} | ({"standardization", "std_mask"} if group["type"] == "volume" else set())
        unknown = set(group) - allowed
        if unknown:
            raise DwimlError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        if group.get("standardization", "none") not in STANDARDIZATIONS:
            raise DwimlError(f"{where}: standardization must be one of {STANDARDIZATIONS}")
    if not any(g["type"] == "volume" for g in config.values()):
        raise DwimlError(f"groups config {path}: needs at least one volume group (the reference space)")
    return config


def read_subject_list(path: str | Path) -> list[str]:
    """Subject names, one per line (blank lines and ``#`` comments ignored)."""
    path = Path(path)
    if not path.is_file():
        raise DwimlError(f"subject list {path} does not exist")
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def create_hdf5(subjects_dir: str | Path, groups_config: dict, out_path: str | Path,
                training: list[str], validation: list[str], testing: list[str]) -> Path:
    """Write the HDF5 under a temporary name, then rename it to ``out_path`` when complete."""
    subjects_dir, out_path = Path(subjects_dir), Path(out_path)
    subsets = dict(zip(SUBSETS, (training, validation, testing)))
    _check_subjects(subjects_dir, subsets)
    tmp_path = out_path.with_name(f"{out_path.name}.tmp-{os.getpid()}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with h5py.File(tmp_path, "w") as h5:
            h5.attrs["format"] = FORMAT
            h5.attrs["format_version"] = FORMAT_VERSION
            h5.attrs["space"] = "vox"
            h5.attrs["origin"] = "nifti"
            h5.attrs["groups_config"] = json.dumps(groups_config)
            for subset, names in subsets.items():
                h5.attrs[f"{subset}_subjects"] = json.dumps(list(names))
            all_subjects = [s for names in subsets.values() for s in names]
            for subject in tqdm(all_subjects, desc="subjects", disable=None):
                _write_subject(h5.create_group(subject), subjects_dir / subject, groups_config)
        os.replace(tmp_path, out_path)
    finally:
        tmp_path.unlink(missing_ok=True)
    return out_path


def open_hdf5(path: str | Path) -> h5py.File:
    """Open a dwiml HDF5 for reading; a clear error when it is missing or not a dwiml file."""
    path = Path(path)
    if not path.is_file():
        raise DwimlError(f"HDF5 file {path} does not exist")
    try:
        h5 = h5py.File(path, "r")
    except OSError as e:
        raise DwimlError(f"{path} is not an HDF5 file ({e})") from None
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


def _expand_files(subject_dir: Path, patterns: list[str], group: str) -> list[Path]:
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(str(subject_dir / pattern)))
        if not matches:
            raise DwimlError(f"subject '{subject_dir.name}', group '{group}': no file {subject_dir / pattern}")
        files.extend(Path(m) for m in matches)
    return files


def _write_subject(h5_subject: h5py.Group, subject_dir: Path, groups_config: dict) -> None:
    reference = None
    for name, group in groups_config.items():
        if group["type"] == "volume":
            files = _expand_files(subject_dir, group["files"], name)
            reference = reference or nib.load(files[0])
            data = _load_volume_group(files, group, reference, subject_dir, name)
            out = h5_subject.create_group(name)
            out.attrs.update(type="volume", affine=reference.affine, nb_features=data.shape[-1],
                             voxel_sizes=coords.voxel_sizes(reference.affine),
                             files=json.dumps([str(f.relative_to(subject_dir)) for f in files]))
            out.create_dataset("data", data=data, chunks=True)
    for name, group in groups_config.items():
        if group["type"] == "streamlines":
            files = _expand_files(subject_dir, group["files"], name)
            _write_streamline_group(h5_subject.create_group(name), files, reference, subject_dir)


def _load_volume_group(files: list[Path], group: dict, reference: nib.Nifti1Image,
                       subject_dir: Path, name: str) -> np.ndarray:
    arrays = []
    for f in files:
        img = nib.load(f)
        if img.shape[:3] != reference.shape[:3] or not np.allclose(img.affine, reference.affine, atol=1e-4):
            raise DwimlError(f"subject '{subject_dir.name}', group '{name}': {f} does not match the "
                             f"reference volume {reference.get_filename()} (shape or affine)")
        data = np.asarray(img.dataobj, dtype=np.float32)
        arrays.append(data[..., None] if data.ndim == 3 else data)
    mode = group.get("standardization", "none")
    if mode == "none":
        return np.concatenate(arrays, axis=-1)
    mask = _standardization_mask(group, arrays, subject_dir, name)
    if mode == "per_file":
        return np.concatenate([_standardize(a, mask, per_channel=False) for a in arrays], axis=-1)
    return _standardize(np.concatenate(arrays, axis=-1), mask, per_channel=mode == "independent")


def _standardization_mask(group: dict, arrays: list[np.ndarray], subject_dir: Path, name: str) -> np.ndarray:
    if group.get("std_mask"):
        files = _expand_files(subject_dir, group["std_mask"], name)
        return np.any([np.asarray(nib.load(f).dataobj) > 0 for f in files], axis=0)
    return np.any([np.any(a != 0, axis=-1) for a in arrays], axis=0)


def _standardize(data: np.ndarray, mask: np.ndarray, per_channel: bool) -> np.ndarray:
    """Zero mean, unit variance inside ``mask``; voxels outside the mask are left at 0."""
    inside = data[mask]
    mean = inside.mean(axis=0) if per_channel else inside.mean()
    std = inside.std(axis=0) if per_channel else inside.std()
    out = np.zeros_like(data)
    out[mask] = (inside - mean) / np.where(std > 0, std, 1.0)
    return out


def _write_streamline_group(out: h5py.Group, files: list[Path], reference: nib.Nifti1Image,
                            subject_dir: Path) -> None:
    points, lengths = [], []
    for f in files:
        if f.suffix not in TRACTOGRAM_EXTENSIONS:
            raise DwimlError(f"{f}: not a tractogram ({', '.join(TRACTOGRAM_EXTENSIONS)})")
        try:
            sft = load_tractogram(str(f), reference, bbox_valid_check=True)
        except ValueError as e:
            raise DwimlError(f"{f}: {e}") from None
        if sft is False:
            raise DwimlError(f"{f}: header does not match the reference volume {reference.get_filename()}")
        coords.to_dwiml_space(sft)
        points.append(np.asarray(sft.streamlines.get_data(), dtype=np.float32))
        lengths.append(np.asarray(sft.streamlines._lengths, dtype=np.int64))
        space = sft.space_attributes
    points_all, lengths_all = np.concatenate(points), np.concatenate(lengths)
    if (lengths_all < 2).any():
        raise DwimlError(f"subject '{subject_dir.name}': {int((lengths_all < 2).sum())} streamline(s) "
                         f"with fewer than 2 points in {[str(f) for f in files]}")
    offsets = np.cumsum(lengths_all) - lengths_all
    lengths_mm = streamlines.lengths_mm(torch.from_numpy(points_all), torch.from_numpy(lengths_all),
                                        torch.as_tensor(space[2])).numpy()
    out.attrs.update(type="streamlines", affine=space[0], dimensions=np.asarray(space[1]),
                     voxel_sizes=np.asarray(space[2]), voxel_order="".join(space[3]),
                     files=json.dumps([str(f.relative_to(subject_dir)) for f in files]))
    out.create_dataset("points", data=points_all, chunks=True)
    out.create_dataset("offsets", data=offsets)
    out.create_dataset("lengths", data=lengths_all)
    out.create_dataset("lengths_mm", data=lengths_mm.astype(np.float32))
