"""Vectorized operations on packed streamlines.

A batch of ``B`` streamlines is one ``(N, 3)`` tensor of points (all streamlines
one after the other, in dwiml's voxel space, see :mod:`dwiml.data.coords`) and
a ``(B,)`` tensor of lengths (number of points). No function here loops over
streamlines or points in Python.
"""
from __future__ import annotations

import numpy as np
import torch
from dipy.tracking.streamlinespeed import compress_streamlines
from nibabel.streamlines import ArraySequence
from torch import Tensor


def offsets(lengths: Tensor) -> Tensor:
    """Index of the first point of each streamline."""
    return torch.cumsum(lengths, 0) - lengths


def point_streamline_ids(lengths: Tensor) -> Tensor:
    """For each point, the index of the streamline it belongs to."""
    return torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), lengths)


def point_local_ids(lengths: Tensor) -> Tensor:
    """For each point, its index inside its own streamline."""
    total = int(lengths.sum())
    starts = torch.repeat_interleave(offsets(lengths), lengths)
    return torch.arange(total, device=lengths.device) - starts


def select(points: Tensor, lengths: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """Keep the streamlines where ``keep`` (a ``(B,)`` bool tensor) is true."""
    return points[torch.repeat_interleave(keep, lengths)], lengths[keep]


def segment_lengths_mm(points: Tensor, lengths: Tensor, voxel_sizes: Tensor) -> Tensor:
    """Length (mm) of the segment from each point to the next, 0 at the last point of each streamline.

    ``voxel_sizes`` is ``(3,)`` or per point ``(N, 3)``.
    """
    seg = torch.zeros(len(points), dtype=torch.float64, device=points.device)
    if len(points) > 1:
        step = (points[1:] - points[:-1]).double() * voxel_sizes_at(voxel_sizes, len(points))[:-1]
        seg[:-1] = step.norm(dim=1)
    seg[offsets(lengths) + lengths - 1] = 0.0
    return seg


def voxel_sizes_at(voxel_sizes: Tensor, nb_points: int) -> Tensor:
    """Voxel sizes broadcast to one row per point, float64."""
    return voxel_sizes.double().expand(nb_points, 3) if voxel_sizes.dim() == 1 else voxel_sizes.double()


def lengths_mm(points: Tensor, lengths: Tensor, voxel_sizes: Tensor) -> Tensor:
    """Length of each streamline in mm."""
    seg = segment_lengths_mm(points, lengths, voxel_sizes)
    return torch.zeros(len(lengths), dtype=torch.float64, device=points.device).index_add_(
        0, point_streamline_ids(lengths), seg)


def resample_step(points: Tensor, lengths: Tensor, voxel_sizes: Tensor,
                  step_size_mm: float) -> tuple[Tensor, Tensor]:
    """Resample each streamline to equally spaced points about ``step_size_mm`` apart.

    Each streamline keeps its two end points and gets ``max(2, round(L / step) + 1)``
    points (``L`` its length in mm). ``voxel_sizes`` is ``(3,)`` or per point ``(N, 3)``.
    """
    total = lengths_mm(points, lengths, voxel_sizes)
    return resample(points, lengths, voxel_sizes, torch.clamp(torch.round(total / step_size_mm).long() + 1, min=2))


def resample(points: Tensor, lengths: Tensor, voxel_sizes: Tensor, new_lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Resample streamline ``b`` to ``new_lengths[b]`` points equally spaced along its length in mm.

    Both end points are kept; this is ``dipy.tracking.streamline.set_number_of_points`` on the
    streamlines in mm, for the whole batch at once. ``voxel_sizes`` is ``(3,)`` or ``(N, 3)``.
    """
    if bool((lengths < 2).any()) or bool((new_lengths < 2).any()):
        raise ValueError("resampling needs streamlines of at least 2 points")
    seg = segment_lengths_mm(points, lengths, voxel_sizes)
    arc = torch.cumsum(seg, 0) - seg  # arc position of each point, continuous across the batch
    first = offsets(lengths)
    last = first + lengths - 1
    total = arc[last] - arc[first]

    sid = point_streamline_ids(new_lengths)
    k = point_local_ids(new_lengths).double()
    target = arc[first][sid] + k * (total / (new_lengths - 1))[sid]
    j = torch.searchsorted(arc, target, right=True) - 1
    j = torch.minimum(torch.maximum(j, first[sid]), last[sid] - 1)
    t = ((target - arc[j]) / seg[j].clamp_min(1e-12)).clamp(0.0, 1.0).to(points.dtype)
    new_points = points[j] + t[:, None] * (points[j + 1] - points[j])
    return new_points, new_lengths


def reverse(points: Tensor, lengths: Tensor, flip: Tensor) -> Tensor:
    """Reverse the point order of the streamlines where ``flip`` (``(B,)`` bool) is true."""
    sid = point_streamline_ids(lengths)
    k = point_local_ids(lengths)
    k = torch.where(flip[sid], lengths[sid] - 1 - k, k)
    return points[offsets(lengths)[sid] + k]


def split(lengths: Tensor, cut: Tensor) -> tuple[Tensor, Tensor]:
    """Split streamlines in two at point index ``cut`` (``(B,)``; 0 means no split).

    Packed points are unchanged: only lengths change. Returns the new lengths and,
    for each new streamline, the index of the streamline it came from.
    """
    halves = torch.stack([torch.where(cut > 0, cut, lengths), lengths - cut.where(cut > 0, lengths)], 1)
    new_lengths = halves.flatten()
    source = torch.arange(len(lengths), device=lengths.device).repeat_interleave(2)
    keep = new_lengths > 0
    return new_lengths[keep], source[keep]


def directions(points: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Segment vectors from each point to the next, packed: ``lengths - 1`` per streamline.

    Returns the directions and the index (in ``points``) of each segment's start point.
    """
    starts = torch.ones(len(points), dtype=torch.bool, device=points.device)
    starts[offsets(lengths) + lengths - 1] = False
    idx = torch.nonzero(starts).squeeze(1)
    return points[idx + 1] - points[idx], idx


def compress(points: Tensor, lengths: Tensor, voxel_sizes: Tensor, tolerance_mm: float) -> tuple[Tensor, Tensor]:
    """Drop the points that lie within ``tolerance_mm`` of the line through their neighbours.

    dipy's ``compress_streamlines`` on the streamlines in mm (its loop along each streamline is
    compiled code), fed and read back as one packed array. ``voxel_sizes`` is ``(3,)`` or per
    point ``(N, 3)``; each streamline must lie in one subject (one voxel size).
    """
    if len(lengths) == 0:
        return points, lengths
    scale = voxel_sizes_at(voxel_sizes, len(points))
    packed_mm = ArraySequence()
    packed_mm._data = (points.double() * scale).cpu().numpy()
    packed_mm._offsets, packed_mm._lengths = offsets(lengths).cpu().numpy(), lengths.cpu().numpy()
    lines = compress_streamlines(packed_mm, tol_error=tolerance_mm)
    new_lengths = torch.as_tensor(np.fromiter(map(len, lines), np.int64, len(lines)), device=lengths.device)
    new_scale = torch.repeat_interleave(scale[offsets(lengths)], new_lengths.to(scale.device), dim=0)
    new_points = torch.from_numpy(np.concatenate(lines)).to(points.device) / new_scale
    return new_points.to(points.dtype), new_lengths
