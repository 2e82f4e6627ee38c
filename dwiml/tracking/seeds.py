"""Seeds: random points inside the voxels of a seeding mask, in dwiml's voxel space.

A voxel ``(i, j, k)`` spans ``[i - 0.5, i + 0.5)`` on each axis (see :mod:`dwiml.data.coords`);
seeds are drawn uniformly inside the chosen voxels. Random numbers come from a CPU
``torch.Generator`` seeded with ``rng_seed``, so the same seed gives the same seeds on any device.
"""
from __future__ import annotations

import torch
from torch import Tensor

from dwiml.errors import DwimlError


def seeds_in_mask(mask: Tensor, seeds_per_voxel: int | None = None, nb_seeds: int | None = None,
                  rng_seed: int = 0) -> Tensor:
    """Seeds ``(N, 3)`` (float32, on ``mask``'s device) inside the voxels where ``mask > 0``.

    ``seeds_per_voxel``: that many seeds in every mask voxel, grouped by voxel in C order.
    ``nb_seeds``: that many seeds in total, each in a mask voxel drawn uniformly with
    replacement (a uniform density over the mask). Neither: one seed per voxel.
    """
    if seeds_per_voxel is not None and nb_seeds is not None:
        raise DwimlError("give seeds_per_voxel or nb_seeds, not both")
    count = nb_seeds if nb_seeds is not None else seeds_per_voxel if seeds_per_voxel is not None else 1
    if count < 1:
        raise DwimlError(f"the number of seeds must be >= 1, got {count}")
    voxels = torch.nonzero(mask.detach().cpu() > 0)
    if len(voxels) == 0:
        raise DwimlError("the seeding mask has no voxel > 0")
    generator = torch.Generator().manual_seed(rng_seed)
    if nb_seeds is None:
        chosen = voxels.repeat_interleave(count, dim=0)
    else:
        chosen = voxels[torch.randint(len(voxels), (count,), generator=generator)]
    # Shrunk by 1e-3 voxel: float32 rounding never moves a seed onto the next voxel's face.
    offsets = (torch.rand(len(chosen), 3, generator=generator, dtype=torch.float64) - 0.5) * (1 - 1e-3)
    return (chosen + offsets).float().to(mask.device)
