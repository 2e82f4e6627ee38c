"""Neighbourhoods: the features of points around each point, concatenated to its own.

Offsets are defined in mm and converted per axis with the voxel sizes, so a neighbourhood
has the same physical extent whatever the voxels (isotropic or not). The origin comes first,
then the neighbours; ``r`` (``nb_rings``) neighbours lie on each side along each axis,
``radius_mm / r`` apart:

- ``none``: the point alone;
- ``axes``: ``±k * radius_mm / r`` along each axis, ``k = 1..r``: ``6r + 1`` points;
- ``grid``: every combination of ``-r..r`` steps on the three axes: ``(2r + 1)^3`` points.

Neighbours outside the volume get zeros (see :mod:`dwiml.data.interpolation`);
:func:`inside_mask` tells which ones lie in the volume.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from dwiml.data import interpolation
from dwiml.errors import DwimlError

TYPES = ("none", "axes", "grid")


@dataclass(frozen=True)
class Neighborhood:
    """A neighbourhood shape; the config keys are ``neighborhood_type``, ``_radius_mm``, ``_nb_rings``."""

    kind: str = "none"
    radius_mm: Optional[float] = None
    nb_rings: int = 1

    def __post_init__(self):
        if self.kind not in TYPES:
            raise DwimlError(f"neighborhood_type: {self.kind!r} is not one of {', '.join(TYPES)}")
        if self.kind == "none" and self.radius_mm is not None:
            raise DwimlError(f"neighborhood_radius_mm: {self.radius_mm} is set but neighborhood_type is none")
        if self.kind != "none" and not (self.radius_mm is not None and self.radius_mm > 0):
            raise DwimlError(f"neighborhood_radius_mm: {self.radius_mm} must be > 0 (mm) "
                             f"with neighborhood_type {self.kind}")
        if self.nb_rings < 1:
            raise DwimlError(f"neighborhood_nb_rings: {self.nb_rings} must be >= 1")

    def __len__(self) -> int:
        """Number of points, the origin included."""
        return {"none": 1, "axes": 6 * self.nb_rings + 1, "grid": (2 * self.nb_rings + 1) ** 3}[self.kind]

    def offsets_mm(self) -> Tensor:
        """``(K, 3)`` offsets in mm, float64, the origin first."""
        origin = torch.zeros(1, 3, dtype=torch.float64)
        if self.kind == "none":
            return origin
        r = self.nb_rings
        steps = torch.arange(-r, r + 1, dtype=torch.float64) * (self.radius_mm / r)
        if self.kind == "axes":
            others = (torch.eye(3, dtype=torch.float64)[:, None, :] * steps[steps != 0, None]).reshape(-1, 3)
        else:
            others = torch.cartesian_prod(steps, steps, steps)
            others = others[(others != 0).any(dim=1)]
        return torch.cat([origin, others])

    def offsets_vox(self, voxel_sizes: Tensor) -> Tensor:
        """``(K, 3)`` offsets in voxels for voxel sizes ``(3,)`` in mm."""
        return self.offsets_mm() / voxel_sizes.double()


def neighbour_points(points: Tensor, offsets_vox: Tensor) -> Tensor:
    """``(N * K, 3)``: the ``K`` neighbours of each point, point after point."""
    return (points[:, None, :] + offsets_vox.to(points)).reshape(-1, 3)


def interpolate(volume: Tensor, points: Tensor, offsets_vox: Tensor) -> Tensor:
    """``(N, K * F)``: the features of the ``K`` neighbours of each point, one after the other."""
    return interpolation.trilinear(volume, neighbour_points(points, offsets_vox)).view(len(points), -1)


def inside_mask(points: Tensor, offsets_vox: Tensor, shape: tuple[int, ...]) -> Tensor:
    """``(N, K)``: true where a neighbour lies inside the volume."""
    return interpolation.inside_mask(neighbour_points(points, offsets_vox), shape).view(len(points), -1)
