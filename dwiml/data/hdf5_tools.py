"""Inspect a dwiml HDF5: describe its content, extract a group back to NIfTI or a tractogram, or its
connectivity matrix to .npy."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from dwiml.atomic import atomic_path
from dwiml.data.hdf5 import SUBSETS, open_hdf5, subject_lists
from dwiml.data.hdf5_subject import GroupArrays, check_output_path, save_group
from dwiml.errors import DwimlError


def describe(path: str | Path) -> str:
    """Sets, subjects, groups, dataset shapes/dtypes/storage, attributes and streamline counts."""
    with open_hdf5(path) as h5:
        lines = [f"{path}: {_attrs_text(h5.attrs, skip=[f'{s}_subjects' for s in SUBSETS])}"]
        lists = subject_lists(h5)
        lines += [f"{subset} ({len(names)}): {', '.join(names)}" for subset, names in lists.items()]
        for subject in (s for names in lists.values() for s in names):
            lines.append(f"subject {subject}")
            for name, group in h5[subject].items():
                count = f", {len(group['lengths'])} streamlines" if "lengths" in group else ""
                lines.append(f"  group {name} ({group.attrs['type']}{count}): {_attrs_text(group.attrs)}")
                group.visititems(lambda key, obj: lines.append(f"    {key}: {_dataset_text(obj)}")
                                 if isinstance(obj, h5py.Dataset) else None)
    return "\n".join(lines)


def group_node(h5: h5py.File, subject: str, group: str) -> h5py.Group:
    """One group of one subject; an error naming the subjects or groups there are."""
    if subject not in h5:
        raise DwimlError(f"{h5.filename}: no subject '{subject}' (subjects: {sorted(h5)})")
    if group not in h5[subject]:
        raise DwimlError(f"{h5.filename}: subject '{subject}' has no group '{group}' (groups: {sorted(h5[subject])})")
    return h5[subject][group]


def read_group(h5: h5py.File, subject: str, group: str) -> GroupArrays:
    """One group of one subject, read whole into memory."""
    node = group_node(h5, subject, group)
    datasets: dict[str, np.ndarray] = {}
    node.visititems(lambda key, obj: datasets.__setitem__(key, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return GroupArrays(dict(node.attrs), datasets)


def extract(path: str | Path, subject: str, group: str, out: str | Path) -> Path:
    """Write one group to ``out`` (.nii/.nii.gz for volumes, .trk/.tck/.trx for streamlines).

    Written under a temporary name and renamed when complete.
    """
    out = Path(out)
    with open_hdf5(path) as h5:
        arrays = read_group(h5, subject, group)
    check_output_path(arrays, out)
    with atomic_path(out) as tmp:
        save_group(arrays, tmp)
    return out


def extract_connectivity(path: str | Path, subject: str, group: str, out: str | Path) -> Path:
    """Write the connectivity matrix stored with a streamline group to ``out`` (.npy), atomically."""
    out = Path(out)
    if out.suffix != ".npy":
        raise DwimlError(f"{out}: a connectivity matrix is written to a .npy file")
    with open_hdf5(path) as h5:
        node = group_node(h5, subject, group)
        if "connectivity_matrix" not in node:
            raise DwimlError(f"{path}: subject '{subject}', group '{group}' has no connectivity matrix "
                             f"(connectivity_matrix in the groups config)")
        matrix = node["connectivity_matrix"][:]
    with atomic_path(out) as tmp:
        np.save(tmp, matrix)
    return out


def _dataset_text(dataset: h5py.Dataset) -> str:
    storage = f", chunks {dataset.chunks}" if dataset.chunks else ""
    storage += f", {dataset.compression}" if dataset.compression else ""
    return f"{dataset.shape} {dataset.dtype}{storage}"


def _attrs_text(attrs: h5py.AttributeManager, skip: tuple | list = ()) -> str:
    return ", ".join(f"{k}={_value_text(v)}" for k, v in attrs.items() if k not in skip)


def _value_text(value) -> str:
    if isinstance(value, np.ndarray):
        return json.dumps(np.round(value, 4).tolist())
    return str(value)
