"""The one coordinate convention of dwiml.

Streamlines are stored and processed in **voxel space with voxel centres at
integer coordinates** (dipy's ``Space.VOX`` with ``Origin.NIFTI``): the point
``(i, j, k)`` is the centre of voxel ``volume[i, j, k]``, and a voxel spans
``[i - 0.5, i + 0.5)`` along each axis. ``apply_affine(affine, p)`` maps such a
point to RAS+ millimetres (nibabel's convention). Distances given in mm
(step sizes, radii, noise) are converted per axis with the voxel sizes.
"""
from __future__ import annotations

import numpy as np
from dipy.io.stateful_tractogram import Origin, Space, StatefulTractogram

SPACE = Space.VOX
ORIGIN = Origin.NIFTI


def to_dwiml_space(sft: StatefulTractogram) -> StatefulTractogram:
    """Put a tractogram in dwiml's convention, in place, and return it."""
    sft.to_space(SPACE)
    sft.to_origin(ORIGIN)
    return sft


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel sizes (mm) along the three voxel axes of an affine."""
    return np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))


def mm_to_vox(points_mm: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """RAS+ mm points to dwiml voxel coordinates."""
    inv = np.linalg.inv(affine)
    return points_mm @ inv[:3, :3].T + inv[:3, 3]


def vox_to_mm(points_vox: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """dwiml voxel coordinates to RAS+ mm points."""
    affine = np.asarray(affine)
    return points_vox @ affine[:3, :3].T + affine[:3, 3]


