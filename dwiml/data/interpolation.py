"""Trilinear interpolation of a volume at points in dwiml's voxel space.

Voxel ``volume[i, j, k]`` is at the point ``(i, j, k)`` (see :mod:`dwiml.data.coords`).
Voxels outside the volume count as zeros (like ``scipy.ndimage.map_coordinates`` with
``order=1, mode="grid-constant", cval=0``): a point more than one voxel outside gets zeros,
with no edge replication, and :func:`inside_mask` tells which points lie in the volume.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

BLOCK_POINTS = 65_536  # points interpolated together: their corner indices and weights fit in the cache


def trilinear(volume: Tensor, points: Tensor) -> Tensor:
    """Interpolate ``volume`` ``(X, Y, Z, F)`` at ``points`` ``(N, 3)``; returns ``(N, F)``.

    Runs on the device of ``volume``. The weight of the voxel at ``c`` is ``max(0, 1 - |p - c|)``
    per axis, so the lower corner can be clamped into the volume: a corner outside then gets
    weight 0 on its own. The weighted sum of each point's 8 corner rows of the channels-last
    table is one fused ``embedding_bag`` call: besides the output, memory holds only the
    ``(N, 8)`` corner indices (int32 when they fit) and weights, never an ``(N, 8, F)`` gather.
    """
    if min(volume.shape[:3]) < 2:  # one voxel along an axis: add a zero voxel (zeros outside anyway)
        volume = F.pad(volume, [0, 0] + [p for n in reversed(volume.shape[:3]) for p in (0, max(0, 2 - n))])
    volume = volume.contiguous()
    points = points.to(volume.device)
    if len(points) <= BLOCK_POINTS:
        return _trilinear_block(volume, points)
    out = volume.new_empty(len(points), volume.shape[3])
    for start in range(0, len(points), BLOCK_POINTS):  # each block's indices and weights stay in cache
        out[start:start + BLOCK_POINTS] = _trilinear_block(volume, points[start:start + BLOCK_POINTS])
    return out


def _trilinear_block(volume: Tensor, points: Tensor) -> Tensor:
    """:func:`trilinear` of a contiguous volume at points on its device."""
    nx, ny, nz, nb_features = volume.shape
    device = volume.device
    upper, strides, steps = _tables(nx, ny, nz, points.dtype, device)
    # Axis-major (3, N) arrays: every elementwise op below runs over long contiguous rows.
    axis_major = points.T
    lower = torch.minimum(axis_major.floor().clamp_(min=0), upper)
    offset = axis_major - lower
    w = torch.stack([offset, offset - 1]).abs_().neg_().add_(1).clamp_(min=0)  # (2 corners, 3 axes, N)
    weights = w[:, None, None, 0] * w[None, :, None, 1] * w[None, None, :, 2]  # (2, 2, 2, N)
    first = (lower.to(strides.dtype) * strides).sum(0, dtype=strides.dtype)
    return F.embedding_bag(first[:, None] + steps, volume.view(-1, nb_features), mode="sum",
                           per_sample_weights=weights.view(8, -1).T.to(volume.dtype).contiguous())


@functools.lru_cache(maxsize=64)
def _tables(nx: int, ny: int, nz: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, ...]:
    """The constants of :func:`trilinear` for a volume's shape (made once: no copy to the device per call):
    the largest lower corner ``(3, 1)``, the strides of the channels-last
    table ``(3, 1)`` and the 8 corners' steps in it ``(8,)`` (int32 when the table's rows fit)."""
    index_dtype = torch.int32 if nx * ny * nz < 2 ** 31 else torch.int64
    upper = torch.tensor([[nx - 2], [ny - 2], [nz - 2]], dtype=dtype, device=device)
    strides = torch.tensor([[ny * nz], [nz], [1]], dtype=index_dtype, device=device)
    steps = torch.tensor([di * ny * nz + dj * nz + dk for di in (0, 1) for dj in (0, 1) for dk in (0, 1)],
                         dtype=index_dtype, device=device)
    return upper, strides, steps


def inside_mask(points: Tensor, shape: tuple[int, ...]) -> Tensor:
    """True for points inside the volume's extent (each voxel spans ±0.5 around its centre)."""
    upper = shape_tensor(tuple(shape[:3]), points.dtype, points.device) - 0.5
    return ((points >= -0.5) & (points < upper)).all(dim=1)


@functools.lru_cache(maxsize=64)
def shape_tensor(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """``torch.tensor(shape)``, made once per shape, dtype and device (steps of tracking need it at every step)."""
    return torch.tensor(shape, dtype=dtype, device=device)
