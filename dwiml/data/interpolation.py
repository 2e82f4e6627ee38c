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

    Runs on the device of ``volume``. The weight of the voxel at ``c`` is ``max(0, 1 - |p - c|)``
    per axis, so the lower corner can be clamped into the volume: a corner outside then gets
    weight 0 on its own. The weighted sum of each point's 8 corner rows of the channels-last
    table is one fused ``embedding_bag`` call: besides the output, memory holds only the
    ``(N, 8)`` corner indices and weights, never an ``(N, 8, F)`` gather.
    """
    if min(volume.shape[:3]) < 2:  # one voxel along an axis: add a zero voxel (zeros outside anyway)
        volume = F.pad(volume, [0, 0] + [p for n in reversed(volume.shape[:3]) for p in (0, max(0, 2 - n))])
    volume = volume.contiguous()
    nx, ny, nz, nb_features = volume.shape
    points = points.to(volume.device)
    lower = points.floor().long().clamp_min(0).minimum(torch.tensor([nx, ny, nz], device=volume.device) - 2)
    corner = torch.arange(2, device=volume.device).view(2, 1, 1)
    w = (1 - (points - lower - corner).abs()).clamp_min(0)  # (2 corners, N, 3 axes)
    weights = w[:, None, None, :, 0] * w[None, :, None, :, 1] * w[None, None, :, :, 2]  # (2, 2, 2, N)
    steps = torch.tensor([di * ny * nz + dj * nz + dk for di in (0, 1) for dj in (0, 1) for dk in (0, 1)],
                         device=volume.device)
    first = lower[:, 0] * (ny * nz) + lower[:, 1] * nz + lower[:, 2]
    return F.embedding_bag(first[:, None] + steps, volume.view(-1, nb_features), mode="sum",
                           per_sample_weights=weights.reshape(8, -1).T.to(volume.dtype))


def inside_mask(points: Tensor, shape: tuple[int, ...]) -> Tensor:
    """True for points inside the volume's extent (each voxel spans ±0.5 around its centre)."""
    upper = torch.tensor(shape[:3], dtype=points.dtype, device=points.device) - 0.5
    return ((points >= -0.5) & (points < upper)).all(dim=1)
