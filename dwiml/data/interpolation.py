"""Trilinear interpolation of a volume at points in dwiml's voxel space.

Voxel ``volume[i, j, k]`` is at the point ``(i, j, k)`` (see :mod:`dwiml.data.coords`).
Corners outside the volume count as zeros (like ``scipy.ndimage.map_coordinates``
with ``order=1, mode="grid-constant"``): a point deep outside gets zeros, and
:func:`inside_mask` tells which points lie in the volume.
"""
from __future__ import annotations

import torch
from torch import Tensor

_CORNERS = torch.tensor([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])


def trilinear(volume: Tensor, points: Tensor) -> Tensor:
    """Interpolate ``volume`` ``(X, Y, Z, F)`` at ``points`` ``(N, 3)``; returns ``(N, F)``.

    Runs on the device of ``volume``; the 8 corners are gathered from the volume viewed
    as a channels-last table, so memory stays ``O(N * F)``.
    """
    shape = torch.tensor(volume.shape[:3], device=volume.device)
    table = volume.reshape(-1, volume.shape[3])
    strides = torch.tensor([volume.shape[1] * volume.shape[2], volume.shape[2], 1], device=volume.device)
    points = points.to(device=volume.device, dtype=volume.dtype)
    base = torch.floor(points)
    frac = points - base
    base = base.long()
    out = torch.zeros(len(points), volume.shape[3], dtype=volume.dtype, device=volume.device)
    for corner in _CORNERS.to(volume.device):
        idx = base + corner
        valid = ((idx >= 0) & (idx < shape)).all(dim=1)
        weight = torch.where(corner.bool(), frac, 1.0 - frac).prod(dim=1) * valid
        flat = (idx.clamp_min(0).minimum(shape - 1) * strides).sum(dim=1)
        out.addcmul_(table[flat], weight[:, None])
    return out


def inside_mask(points: Tensor, shape: tuple[int, ...]) -> Tensor:
    """True for points inside the volume's extent (each voxel spans ±0.5 around its centre)."""
    upper = torch.tensor(shape[:3], dtype=points.dtype, device=points.device) - 0.5
    return ((points >= -0.5) & (points < upper)).all(dim=1)
