"""Stopping rules of tracking, vectorized over a batch of active streamlines.

Each function takes one row per streamline (the new point, the previous and the new
direction, the length so far) and answers for all rows at once, on the device of its
inputs. Points are in dwiml's voxel space (see :mod:`dwiml.data.coords`).

The tracking mask rule: a point is inside when the mask's value there is >= 0.5 (the
mask read at the nearest voxel, or trilinearly interpolated); points outside the
volume are outside the mask.
"""
from __future__ import annotations

import math
from enum import IntEnum

import torch
from torch import Tensor

from dwiml.data import interpolation
from dwiml.data.streamlines import lengths_mm

MASK_THRESHOLD = 0.5


class Stop(IntEnum):
    """Why a streamline stops at this step (``CONTINUE``: it does not)."""

    CONTINUE = 0
    ANGLE = 1
    MAX_LENGTH = 2
    LEFT_MASK = 3
    EOS = 4  # the model's end-of-streamline output
    INCLUDED = 5  # reached the include map (dwiml.tracking.tissues): a valid end, the point is kept
    EXCLUDED = 6  # reached the exclude map: the streamline is rejected


def mask_values(mask: Tensor, points: Tensor, interpolation_mode: str = "nearest") -> Tensor:
    """Values ``(B,)`` of ``mask`` ``(X, Y, Z)`` at ``points`` ``(B, 3)``; 0 outside the volume.

    ``nearest`` reads the voxel containing the point; ``trilinear`` interpolates.
    """
    points = points.to(mask.device)
    inside = interpolation.inside_mask(points, mask.shape)
    if interpolation_mode == "trilinear":
        values = interpolation.trilinear(mask[..., None].float(), points)[:, 0]
    elif interpolation_mode == "nearest":
        last = interpolation.shape_tensor(tuple(n - 1 for n in mask.shape), torch.long, mask.device)
        voxels = torch.floor(points + 0.5).long().clamp(min=0).minimum(last)
        values = mask[tuple(voxels.T)].float()
    else:
        raise ValueError(f"interpolation_mode must be 'nearest' or 'trilinear', got {interpolation_mode!r}")
    return torch.where(inside, values, torch.zeros_like(values))


def in_tracking_mask(mask: Tensor, points: Tensor, interpolation_mode: str = "nearest") -> Tensor:
    """True where the mask value at the point is >= 0.5."""
    return mask_values(mask, points, interpolation_mode) >= MASK_THRESHOLD


def angle_ok(previous_dirs: Tensor, dirs: Tensor, max_angle_deg: float) -> Tensor:
    """True where the angle between consecutive directions is <= ``max_angle_deg``.

    Rows whose previous direction is zero (the first step from a seed) are always fine.
    """
    dot = (previous_dirs * dirs).sum(dim=1)
    previous_norms = previous_dirs.norm(dim=1)
    norms = previous_norms * dirs.norm(dim=1)
    first = previous_norms == 0
    cos_limit = math.cos(math.radians(max_angle_deg)) - 1e-6  # tolerance for an angle equal to the limit
    return first | (dot >= cos_limit * norms)


def within_max_length(lengths_mm_so_far: Tensor, max_length_mm: float) -> Tensor:
    """True where the streamline (its length in mm with the new step) is <= ``max_length_mm``."""
    return lengths_mm_so_far <= max_length_mm + 1e-6


def stop_reasons(mask: Tensor, new_points: Tensor, previous_dirs: Tensor, dirs: Tensor,
                 new_lengths_mm: Tensor, max_angle_deg: float, max_length_mm: float,
                 interpolation_mode: str = "nearest") -> Tensor:
    """One :class:`Stop` code per streamline (``int64``, ``(B,)``) for the step to ``new_points``.

    When several rules fail, the first in the order angle, maximum length, tracking mask wins.
    """
    inside = in_tracking_mask(mask, new_points, interpolation_mode).to(new_points.device)
    reasons = torch.where(inside, int(Stop.CONTINUE), int(Stop.LEFT_MASK))  # no boolean indexing: no sync
    reasons = torch.where(within_max_length(new_lengths_mm, max_length_mm), reasons, int(Stop.MAX_LENGTH))
    return torch.where(angle_ok(previous_dirs, dirs, max_angle_deg), reasons, int(Stop.ANGLE))


def length_in_range(points: Tensor, lengths: Tensor, voxel_sizes: Tensor, min_length_mm: float,
                    max_length_mm: float) -> Tensor:
    """For packed streamlines (points and lengths), True where the length in mm is in range."""
    return in_length_range(lengths_mm(points, lengths, voxel_sizes), min_length_mm, max_length_mm)


def in_length_range(lengths_mm: Tensor, min_length_mm: float, max_length_mm: float) -> Tensor:
    """True where a streamline length (mm) is in ``[min_length_mm, max_length_mm]``."""
    return (lengths_mm >= min_length_mm - 1e-6) & within_max_length(lengths_mm, max_length_mm)
