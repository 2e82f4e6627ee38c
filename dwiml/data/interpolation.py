"""Trilinear interpolation of a volume at points in dwiml's voxel space.

Voxel ``volume[i, j, k]`` is at the point ``(i, j, k)`` (see :mod:`dwiml.data.coords`).
Voxels outside the volume count as zeros (like ``scipy.ndimage.map_coordinates`` with
``order=1, mode="grid-constant", cval=0``): a point more than one voxel outside gets zeros,
with no edge replication, and :func:`inside_mask` tells which points lie in the volume.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def trilinear(volume: Tensor, points: Tensor) -> Tensor:
    """Interpolate ``volume`` ``(X, Y, Z, F)`` at ``points`` ``(N, 3)``; returns ``(N, F)``.

    Runs on the device of ``volume``. Voxels ``k`` and ``k + 1`` along the last axis are
    neighbours in memory, so each of the 4 ``(i, j)`` corner pairs is one row gather of
    ``2F`` values; the largest intermediate is that ``(N, 2F)`` buffer, reused.
    The weight of the voxel at ``c`` is ``max(0, 1 - |p - c|)`` per axis, so the lower
    corner can be clamped into the volume: a corner outside gets weight 0 on its own.
    """
    if min(volume.shape[:3]) < 2:  # one voxel along an axis: add a zero voxel (zeros outside anyway)
        volume = F.pad(volume, [0, 0] + [p for n in reversed(volume.shape[:3]) for p in (0, max(0, 2 - n))])
    volume = volume.contiguous()
    nx, ny, nz, nb_features = volume.shape
    points = points.to(volume.device)
    shape = torch.tensor([nx, ny, nz], device=volume.device)
    lower = points.floor().long().clamp_min(0).minimum(shape - 2)
    corner = torch.arange(2, device=volume.device).view(2, 1, 1)
    weights = (1 - (points - lower - corner).abs()).clamp_min(0).to(volume.dtype)  # (2 corners, N, 3 axes)

    pairs = volume.view(-1, nb_features).as_strided((nx * ny * nz - 1, 2 * nb_features), (nb_features, 1))
    first = lower[:, 0] * (ny * nz) + lower[:, 1] * nz + lower[:, 2]
    rows = torch.empty(len(points), 2 * nb_features, dtype=volume.dtype, device=volume.device)
    out = torch.zeros(len(points), nb_features, dtype=volume.dtype, device=volume.device)
    for di in (0, 1):
        for dj in (0, 1):
            torch.index_select(pairs, 0, first + di * ny * nz + dj * nz, out=rows)
            w_ij = weights[di, :, 0] * weights[dj, :, 1]
            out.addcmul_(rows[:, :nb_features], (w_ij * weights[0, :, 2])[:, None])
            out.addcmul_(rows[:, nb_features:], (w_ij * weights[1, :, 2])[:, None])
    return out


def inside_mask(points: Tensor, shape: tuple[int, ...]) -> Tensor:
    """True for points inside the volume's extent (each voxel spans ±0.5 around its centre)."""
    upper = torch.tensor(shape[:3], dtype=points.dtype, device=points.device) - 0.5
    return ((points >= -0.5) & (points < upper)).all(dim=1)
