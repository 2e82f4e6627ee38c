"""MultiSubjectDataset: the training, validation and testing subjects of a dwiml HDF5.

Metadata (affines, shapes, streamline lengths and offsets) is always read at start-up.
Bulk data (volumes and streamline points) is read at start-up when ``lazy=False``, or on
demand when ``lazy=True``: each process then opens its own file handle, so the dataset
can be sent to DataLoader workers.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from dwiml.data.hdf5 import SUBSETS, open_hdf5, subject_lists
from dwiml.errors import DwimlError


@dataclass(frozen=True)
class StreamlineIndex:
    """Per-streamline metadata of one subject's streamline group."""

    offsets: np.ndarray
    lengths: np.ndarray
    lengths_mm: np.ndarray


class SubjectSet:
    """One subset (training, validation or testing): subjects addressed by their index."""

    def __init__(self, hdf5_path: Path, name: str, subjects: list[str], lazy: bool):
        self.hdf5_path, self.name, self.subjects, self.lazy = hdf5_path, name, subjects, lazy
        self._h5: h5py.File | None = None
        self._pid = -1
        self._arrays: dict[tuple[int, str], np.ndarray] = {}
        with open_hdf5(hdf5_path) as h5:
            self.groups = {g: h5[subjects[0]][g].attrs["type"] for g in h5[subjects[0]]} if subjects else {}
            self.index = {}
            self.attrs = {}
            for i, subject in enumerate(subjects):
                for group, kind in self.groups.items():
                    node = _node(h5, subject, group)
                    self.attrs[i, group] = dict(node.attrs)
                    if kind == "streamlines":
                        self.index[i, group] = StreamlineIndex(node["offsets"][:], node["lengths"][:],
                                                               node["lengths_mm"][:])
                    if not lazy:
                        self._arrays[i, group] = node["data" if kind == "volume" else "points"][:]

    def __len__(self) -> int:
        return len(self.subjects)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_h5": None, "_pid": -1}

    def volume(self, subject: int, group: str) -> np.ndarray:
        """The ``(X, Y, Z, F)`` float32 volume of a volume group."""
        self._check(group, "volume")
        if not self.lazy:
            return self._arrays[subject, group]
        return self._file()[self.subjects[subject]][group]["data"][:]

    def streamlines(self, subject: int, group: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Packed points ``(N, 3)`` and lengths of streamlines ``ids``, in that order."""
        self._check(group, "streamlines")
        index = self.index[subject, group]
        starts, lengths = index.offsets[ids], index.lengths[ids]
        if len(ids) == 0:
            return np.zeros((0, 3), np.float32), lengths
        lo, hi = int(starts.min()), int((starts + lengths).max())
        if self.lazy:
            block = self._file()[self.subjects[subject]][group]["points"][lo:hi]
        else:
            block = self._arrays[subject, group][lo:hi]
        local = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths - (starts - lo), lengths)
        return block[local], lengths

    def voxel_sizes(self, subject: int, group: str) -> np.ndarray:
        return np.asarray(self.attrs[subject, group]["voxel_sizes"], dtype=np.float64)

    def affine(self, subject: int, group: str) -> np.ndarray:
        return np.asarray(self.attrs[subject, group]["affine"], dtype=np.float64)

    def _check(self, group: str, kind: str) -> None:
        if self.groups.get(group) != kind:
            known = [g for g, k in self.groups.items() if k == kind]
            raise DwimlError(f"{self.hdf5_path}: no {kind} group '{group}' (groups: {known})")

    def _file(self) -> h5py.File:
        if self._h5 is None or self._pid != os.getpid():
            self._h5, self._pid = h5py.File(self.hdf5_path, "r"), os.getpid()
        return self._h5


class MultiSubjectDataset:
    """The three subsets of a dwiml HDF5 file."""

    def __init__(self, hdf5_path: str | Path, lazy: bool = False):
        self.hdf5_path = Path(hdf5_path).expanduser()
        with open_hdf5(self.hdf5_path) as h5:
            lists = subject_lists(h5)
            self.groups_config = json.loads(h5.attrs["groups_config"])
        self.training, self.validation, self.testing = (
            SubjectSet(self.hdf5_path, subset, lists[subset], lazy) for subset in SUBSETS)

    def subset(self, name: str) -> SubjectSet:
        if name not in SUBSETS:
            raise DwimlError(f"unknown subset '{name}' (one of {SUBSETS})")
        return getattr(self, name)

    def nb_features(self, group: str) -> int:
        """Number of channels (last axis) of a volume group."""
        subset = next((s for s in (self.training, self.validation, self.testing) if len(s)), None)
        if subset is None:
            raise DwimlError(f"{self.hdf5_path}: no subjects")
        subset._check(group, "volume")
        return int(subset.attrs[0, group]["nb_features"])


def _node(h5: h5py.File, subject: str, group: str) -> h5py.Group:
    if subject not in h5:
        raise DwimlError(f"{h5.filename}: no subject '{subject}'")
    if group not in h5[subject]:
        raise DwimlError(f"{h5.filename}: subject '{subject}' has no group '{group}'")
    return h5[subject][group]
