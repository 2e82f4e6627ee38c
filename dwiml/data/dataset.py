"""MultiSubjectDataset: the training, validation and testing subjects of a dwiml HDF5.

Metadata (affines, shapes, streamline lengths and offsets) is always read at start-up.
Bulk data (volumes and streamline points) is read at start-up when ``lazy=False``, or on
demand when ``lazy=True``, through one :class:`~dwiml.data.lazy.HDF5Reader` shared by the
three subsets: one file handle per process (so the dataset can be sent to DataLoader
workers) and one cache of volume blocks bounded by ``cache_bytes`` (see
:mod:`dwiml.data.lazy`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from dwiml.data.connectivity import ConnectivityReference
from dwiml.data.hdf5 import SUBSETS, open_hdf5, subject_lists
from dwiml.data.lazy import HDF5Reader, ranges
from dwiml.errors import DwimlError

WHOLE_VOLUME_SHARE = 4  # lazy mode: volumes up to this fraction of the cache are read and kept whole


@dataclass(frozen=True)
class StreamlineIndex:
    """Per-streamline metadata of one subject's streamline group."""

    offsets: np.ndarray
    lengths: np.ndarray
    lengths_mm: np.ndarray


class SubjectSet:
    """One subset (training, validation or testing): subjects addressed by their index."""

    def __init__(self, hdf5_path: Path, name: str, subjects: list[str], reader: HDF5Reader | None = None):
        """Lazy when given a ``reader`` (shared with the other subsets), else read into memory."""
        self.hdf5_path, self.name, self.subjects = hdf5_path, name, subjects
        self.reader, self.lazy = reader, reader is not None
        self._arrays: dict[tuple[int, str], np.ndarray] = {}
        self.shapes: dict[tuple[int, str], tuple[int, ...]] = {}
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
                    elif kind == "volume":
                        self.shapes[i, group] = node["data"].shape
                    if not self.lazy:
                        self._arrays[i, group] = node["data" if kind == "volume" else "points"][:]

    def __len__(self) -> int:
        return len(self.subjects)

    def volume(self, subject: int, group: str) -> np.ndarray:
        """The ``(X, Y, Z, F)`` float32 volume of a volume group.

        In lazy mode, a volume that :meth:`fits_cache` is read whole, in one read, and kept in the
        cache as one array; a larger one is assembled from its cached chunk blocks."""
        self.check_group(group, "volume")
        if not self.lazy:
            return self._arrays[subject, group]
        if self.fits_cache(subject, group):
            name = f"{self.subjects[subject]}/{group}"
            return self.reader.cache.get((name, "whole"), lambda: self.reader.read(f"{name}/data", np.s_[...]))
        return self.volume_region(subject, group, (0, 0, 0), self.shapes[subject, group][:3])[0]

    def fits_cache(self, subject: int, group: str) -> bool:
        """True in memory, and in lazy mode for a volume taking at most ``1 / WHOLE_VOLUME_SHARE`` of
        the cache (the volumes of several subjects stay cached whole, batch after batch)."""
        nbytes = 4 * int(np.prod(self.shapes[subject, group]))  # float32
        return not self.lazy or nbytes <= self.reader.cache.max_bytes // WHOLE_VOLUME_SHARE

    def volume_region(self, subject: int, group: str, lo, hi) -> tuple[np.ndarray, np.ndarray]:
        """Voxels ``[lo, hi)`` of a volume group, clamped to the volume, and their origin (``lo`` clamped).

        In lazy mode only the chunks overlapping the region are read (and cached).
        """
        self.check_group(group, "volume")
        shape = np.array(self.shapes[subject, group][:3])
        lo = np.clip(np.asarray(lo, dtype=np.int64), 0, shape)
        hi = np.clip(np.asarray(hi, dtype=np.int64), lo, shape)
        if not self.lazy:
            return self._arrays[subject, group][lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], lo
        name = f"{self.subjects[subject]}/{group}"
        return self.reader.region(f"{name}/data", lo, hi, key=name), lo

    def streamlines(self, subject: int, group: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Packed points ``(N, 3)`` and lengths of streamlines ``ids``, in that order."""
        self.check_group(group, "streamlines")
        index = self.index[subject, group]
        starts, lengths = index.offsets[ids], index.lengths[ids]
        if len(ids) == 0:
            return np.zeros((0, 3), np.float32), lengths
        if not self.lazy:
            return self._arrays[subject, group][ranges(starts, lengths)], lengths
        return self.reader.rows(f"{self.subjects[subject]}/{group}/points", starts, lengths), lengths

    def connectivity(self, subject: int, group: str) -> ConnectivityReference | None:
        """The streamline group's connectivity reference, None when it has none."""
        self.check_group(group, "streamlines")
        attrs = self.attrs[subject, group]
        kind = attrs.get("connectivity_type")
        if kind is None:
            return None
        with h5py.File(self.hdf5_path, "r") as h5:
            node = h5[self.subjects[subject]][group]
            matrix = node["connectivity_matrix"][:]
            labels = node["connectivity_labels"][:] if kind == "labels" else None
        nb_blocs = tuple(int(n) for n in attrs["connectivity_nb_blocs"]) if kind == "blocs" else None
        return ConnectivityReference(matrix, tuple(int(n) for n in attrs["dimensions"]), labels, nb_blocs)

    def voxel_sizes(self, subject: int, group: str) -> np.ndarray:
        return np.asarray(self.attrs[subject, group]["voxel_sizes"], dtype=np.float64)

    def affine(self, subject: int, group: str) -> np.ndarray:
        return np.asarray(self.attrs[subject, group]["affine"], dtype=np.float64)

    def check_group(self, group: str, kind: str) -> None:
        """A clear error when the subjects have no group ``group`` of type ``kind`` (volume or streamlines)."""
        if self.groups.get(group) != kind:
            known = [g for g, k in self.groups.items() if k == kind]
            raise DwimlError(f"{self.hdf5_path}: no {kind} group '{group}' (groups: {known})")


class MultiSubjectDataset:
    """The three subsets of a dwiml HDF5 file.

    ``lazy=True`` reads on demand, keeping at most ``cache_bytes`` of volume blocks per process.
    """

    def __init__(self, hdf5_path: str | Path, lazy: bool = False, cache_bytes: int = 2**30):
        self.hdf5_path = Path(hdf5_path).expanduser()
        self.lazy = lazy
        with open_hdf5(self.hdf5_path) as h5:
            lists = subject_lists(h5)
            self.groups_config = json.loads(h5.attrs["groups_config"])
        self.reader = HDF5Reader(self.hdf5_path, cache_bytes) if lazy else None
        self.training, self.validation, self.testing = (
            SubjectSet(self.hdf5_path, subset, lists[subset], self.reader) for subset in SUBSETS)

    def subset(self, name: str) -> SubjectSet:
        if name not in SUBSETS:
            raise DwimlError(f"unknown subset '{name}' (one of {SUBSETS})")
        return getattr(self, name)

    def nb_features(self, group: str) -> int:
        """Number of channels (last axis) of a volume group."""
        subset = next((s for s in (self.training, self.validation, self.testing) if len(s)), None)
        if subset is None:
            raise DwimlError(f"{self.hdf5_path}: no subjects")
        subset.check_group(group, "volume")
        return int(subset.attrs[0, group]["nb_features"])


def _node(h5: h5py.File, subject: str, group: str) -> h5py.Group:
    if subject not in h5:
        raise DwimlError(f"{h5.filename}: no subject '{subject}'")
    if group not in h5[subject]:
        raise DwimlError(f"{h5.filename}: subject '{subject}' has no group '{group}'")
    return h5[subject][group]
