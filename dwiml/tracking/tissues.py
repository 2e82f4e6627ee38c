"""Anatomically constrained tracking from partial-volume tissue maps, vectorized over streamlines.

Two maps on the input's grid: ``include`` (where reaching it is a valid end, e.g. the grey
matter's partial volume) and ``exclude`` (where reaching it rejects the streamline, e.g. the
CSF's). Each new point gets one :class:`Tissue` status, with dipy's definitions and codes
(``dipy.tracking.stopping_criterion``); the maps are read by trilinear interpolation, replicating
the border voxels in the volume's outer half voxel, as dipy does:

- ``act`` (dipy's ``ActStoppingCriterion``): outside the volume -> ``OUTSIDE``; else include > 0.5
  -> ``INCLUDED``; else exclude > 0.5 -> ``EXCLUDED``; else ``TRACK``.
- ``cmc`` (continuous map criterion, dipy's ``CmcStoppingCriterion``): outside -> ``OUTSIDE``;
  with ``i``, ``e`` the two values, ``TRACK`` when ``i + e <= 0``, else ``TRACK`` with probability
  ``(max(0, 1 - i - e) / max(1, i + e)) ** (step_size / mean voxel size)``, otherwise ``INCLUDED``
  with probability ``i / (i + e)`` and ``EXCLUDED`` else. Draws come from the tracker's generator.

The tracker ends a streamline at the first ``INCLUDED`` point (kept: the streamline reached the
include map) or ``EXCLUDED`` point, and keeps only streamlines whose every tracked end is
``INCLUDED``; any other end (the exclude map, leaving the volume or the tracking mask, the angle,
the maximum length, the EOS output) rejects it. To keep streamlines that leave the brain (e.g.
through the brain stem), add the background to the include map (dipy's ``from_pve`` does).

Seeding at the white/grey matter interface (:func:`interface_mask`): voxels whose WM partial
volume is >= 0.5 with at least one of their 6 face neighbours whose GM partial volume is >= 0.5.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from dwiml.data.interpolation import inside_mask, trilinear
from dwiml.errors import DwimlError
from dwiml.tracking.stopping import Stop

RULES = ("act", "cmc")


class Tissue(IntEnum):
    """The status of a point (dipy's ``StreamlineStatus`` codes)."""

    OUTSIDE = -1
    EXCLUDED = 0
    TRACK = 1
    INCLUDED = 2


def map_values(volume: Tensor, points: Tensor) -> Tensor:
    """``(B,)``: ``volume`` ``(X, Y, Z)`` interpolated trilinearly at ``points``, the border voxels
    replicated up to the volume's edge (half a voxel past the border voxels' centres)."""
    upper = torch.tensor(volume.shape, dtype=points.dtype, device=points.device) - 1
    return trilinear(volume[..., None], points.clamp(min=0).minimum(upper))[:, 0]


@dataclass
class TissueMaps:
    """The include and exclude maps ``(X, Y, Z)`` (float32, on the tracking device), the rule, and
    CMC's exponent ``step_size_mm / mean voxel size``."""

    include: Tensor
    exclude: Tensor
    rule: Literal["act", "cmc"] = "act"
    correction: float = 1.0

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise DwimlError(f"the tissue rule must be one of {list(RULES)}, got '{self.rule}'")
        if self.include.shape != self.exclude.shape:
            raise DwimlError(f"the include map {tuple(self.include.shape)} and the exclude map "
                             f"{tuple(self.exclude.shape)} differ in shape")

    def to(self, device: torch.device | str) -> TissueMaps:
        return TissueMaps(self.include.to(device, torch.float32), self.exclude.to(device, torch.float32), self.rule,
                          self.correction)

    def status(self, points: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One :class:`Tissue` code per point (``int64``, ``(B,)``); ``cmc`` draws with ``generator``."""
        points = points.to(self.include.device, torch.float32)
        include, exclude = map_values(self.include, points), map_values(self.exclude, points)
        if self.rule == "act":
            status = torch.where(include > 0.5, int(Tissue.INCLUDED),
                                 torch.where(exclude > 0.5, int(Tissue.EXCLUDED), int(Tissue.TRACK)))
        else:
            total = include + exclude
            rest = (1 - total).clamp(min=0)
            go_on = (rest / (rest + total).clamp(min=1e-30)) ** self.correction
            draws = torch.rand(2, len(points), generator=generator, device=points.device)
            ends = torch.where(draws[1] < include / total.clamp(min=1e-30), int(Tissue.INCLUDED),
                               int(Tissue.EXCLUDED))
            status = torch.where((total <= 0) | (draws[0] < go_on), int(Tissue.TRACK), ends)
        return torch.where(inside_mask(points, self.include.shape), status, int(Tissue.OUTSIDE))


def tissue_stops(tissue: Tensor, reasons: Tensor) -> Tensor:
    """The tracker's :class:`~dwiml.tracking.stopping.Stop` codes with the tissue statuses applied to
    the rows no other rule stopped (a point outside the volume has left the tracking mask)."""
    codes = torch.tensor([Stop.LEFT_MASK, Stop.EXCLUDED, Stop.CONTINUE, Stop.INCLUDED], device=tissue.device)
    return torch.where(reasons == Stop.CONTINUE, codes[tissue + 1], reasons)


def interface_mask(wm: np.ndarray, gm: np.ndarray) -> np.ndarray:
    """``(X, Y, Z)`` bool: WM voxels (>= 0.5) with a face neighbour in the GM (>= 0.5)."""
    if wm.shape != gm.shape:
        raise DwimlError(f"the WM map {wm.shape} and the GM map {gm.shape} differ in shape")
    near_gm = ndimage.binary_dilation(gm >= 0.5, structure=ndimage.generate_binary_structure(3, 1))
    return (wm >= 0.5) & near_gm
