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
from pathlib import Path

import numpy as np

from dwiml.data.readers import load_nifti, read_labels
from dwiml.errors import DwimlError

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
        return regions(points, self.shape, self.labels, self.nb_blocs)

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


def regions(points: np.ndarray, shape: tuple[int, int, int], labels: np.ndarray | None = None,
            nb_blocs: tuple[int, int, int] | None = None) -> np.ndarray:
    """Row of the matrix for each point ``(N, 3)`` (voxel space) on a grid of ``shape``, from a label
    volume or a number of blocs per axis; ``NO_REGION`` outside every region."""
    voxels = np.floor(np.asarray(points) + 0.5).astype(np.int64)
    inside = ((voxels >= 0) & (voxels < np.array(shape))).all(axis=1)
    rows = np.full(len(voxels), NO_REGION, dtype=np.int64)
    v = voxels[inside]
    if labels is not None:
        rows[inside] = labels[tuple(v.T)].astype(np.int64) - 1  # label 0 -> NO_REGION
    else:
        blocs = np.array(nb_blocs)
        rows[inside] = np.ravel_multi_index(tuple((v * blocs // np.array(shape)).T), tuple(nb_blocs))
    return rows


def count_matrix(first_points: np.ndarray, last_points: np.ndarray, shape: tuple[int, int, int],
                 labels: np.ndarray | None = None, nb_blocs: tuple[int, int, int] | None = None) -> np.ndarray:
    """The symmetric ``(M, M)`` streamline counts between the regions of each streamline's two end
    points (a streamline within one region counts once on the diagonal; one with an end outside every
    region is not counted). ``M``: the largest label, or the number of blocs."""
    size = int(labels.max(initial=0)) if labels is not None else int(np.prod(nb_blocs))
    a, b = regions(first_points, shape, labels, nb_blocs), regions(last_points, shape, labels, nb_blocs)
    connected = (a != NO_REGION) & (b != NO_REGION)
    low, high = np.minimum(a, b)[connected], np.maximum(a, b)[connected]
    matrix = np.zeros((size, size), dtype=np.int64)
    np.add.at(matrix, (low, high), 1)
    return matrix + np.triu(matrix, 1).T


def load_regions(labels_path: str | Path | None, nb_blocs: list[int] | None, reference: str | Path | None
                 ) -> tuple[tuple[int, int, int], np.ndarray | None, tuple[int, int, int] | None, str]:
    """The grid's shape, the label volume or the blocs per axis (one number for all three, or three),
    and the reference image of the tractogram (default: the label volume)."""
    if labels_path is not None:
        labels_img, data = read_labels(labels_path)
        if reference is not None:
            ref = load_nifti(reference)
            if ref.shape[:3] != data.shape or not np.allclose(ref.affine, labels_img.affine, atol=1e-4):
                raise DwimlError(f"{labels_path} does not lie on the grid of the reference {reference}")
        return data.shape, data, None, str(reference or labels_path)
    if reference is None:
        raise DwimlError("blocs need the grid of the tractogram: give --reference (a NIfTI image)")
    if len(nb_blocs) not in (1, 3) or min(nb_blocs) < 1:
        raise DwimlError(f"the number of blocs is one positive number or three, got {nb_blocs}")
    shape = load_nifti(reference).shape[:3]
    return shape, None, tuple(int(n) for n in np.broadcast_to(nb_blocs, (3,))), str(reference)
