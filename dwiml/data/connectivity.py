"""A streamline group's connectivity reference: which regions its streamlines connect, and how often.

Stored in the HDF5 beside the streamlines (see :mod:`dwiml.data.hdf5`): a square matrix
``(M, M)`` of streamline counts between regions, with either

- a label volume (``connectivity_type="labels"``): label ``l`` in ``1..M`` is row ``l - 1``,
  label 0 is no region;
- a number of blocs per axis (``connectivity_type="blocs"``): the volume is cut into
  ``nb_blocs`` equal blocs along each axis, numbered in C order (the last axis fastest).

A point's region is read at the voxel holding it (see :mod:`dwiml.data.coords`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NO_REGION = -1


@dataclass(frozen=True)
class ConnectivityReference:
    """The reference matrix and how points map to its rows."""

    matrix: np.ndarray  # (M, M)
    shape: tuple[int, int, int]  # the volume's grid
    labels: np.ndarray | None = None  # (X, Y, Z) int, or None for blocs
    nb_blocs: tuple[int, int, int] | None = None

    def regions(self, points: np.ndarray) -> np.ndarray:
        """Row of the matrix for each point ``(N, 3)`` (voxel space); ``NO_REGION`` outside every region."""
        voxels = np.floor(np.asarray(points) + 0.5).astype(np.int64)
        inside = ((voxels >= 0) & (voxels < np.array(self.shape))).all(axis=1)
        rows = np.full(len(voxels), NO_REGION, dtype=np.int64)
        v = voxels[inside]
        if self.labels is not None:
            rows[inside] = self.labels[tuple(v.T)].astype(np.int64) - 1  # label 0 -> NO_REGION
        else:
            blocs = np.array(self.nb_blocs)
            rows[inside] = np.ravel_multi_index(tuple((v * blocs // np.array(self.shape)).T), self.nb_blocs)
        return rows

    def false_positive_rate(self, first_points: np.ndarray, last_points: np.ndarray) -> float:
        """Share of streamlines (given by their end points) joining two regions that the reference
        never connects (a zero in the matrix). Streamlines with an end outside every region are
        counted in the total but are no connection."""
        a, b = self.regions(first_points), self.regions(last_points)
        connected = (a != NO_REGION) & (b != NO_REGION)
        unknown = connected.copy()
        unknown[connected] = (self.matrix[a[connected], b[connected]] == 0) & (
            self.matrix[b[connected], a[connected]] == 0)
        return float(unknown.sum()) / len(a) if len(a) else float("nan")
