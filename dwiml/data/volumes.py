"""The volume around a subject's points, as a tensor on the device, for interpolation.

Both sources answer ``around(subset, subject, points)`` with a volume tensor and the points
in its voxel coordinates, so that ``trilinear(volume, local_points)`` gives the same values
whichever source is used:

- :class:`DeviceVolumes` (``lazy=False``): whole volumes, kept on the device, the last few used;
- :class:`VolumeRegions` (``lazy=True``): a volume that fits the dataset's cache (see
  ``SubjectSet.fits_cache``) is read whole once, kept in the cache, and used like an in-memory
  one (batches spanning the volume then assemble nothing); a larger one gives, per call, only the
  bounding box of the points' interpolation corners (plus ``margin`` voxels), read through the
  dataset's chunk cache. Besides the cache, the last ``cache_size`` whole volumes stay on the device.
  The box holds every corner that lies inside the volume, corners outside the volume stay
  outside the box (so they still count as zeros), and the shift by the box's origin is exact
  in floating point (an integer no larger than the coordinates, which stay non-negative).
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import Tensor

from dwiml.data.dataset import MultiSubjectDataset


class DeviceVolumes:
    """The last ``size`` whole volumes used, as tensors on the device (least recently used evicted)."""

    def __init__(self, dataset: MultiSubjectDataset, group: str, device: torch.device, size: int):
        self.dataset, self.group, self.device, self.size = dataset, group, device, size
        self._volumes: OrderedDict[tuple[str, int], Tensor] = OrderedDict()

    def around(self, subset: str, subject: int, points: Tensor) -> tuple[Tensor, Tensor]:
        key = (subset, subject)
        if key in self._volumes:
            self._volumes.move_to_end(key)
        else:
            array = self.dataset.subset(subset).volume(subject, self.group)
            self._volumes[key] = torch.from_numpy(array).to(self.device)
            if len(self._volumes) > self.size:
                self._volumes.popitem(last=False)
        return self._volumes[key], points


class VolumeRegions:
    """The whole volume when it fits the cache, else the bounding box of the points' corners
    (widened by ``margin`` voxels), read on demand."""

    def __init__(self, dataset: MultiSubjectDataset, group: str, device: torch.device, margin: int = 0,
                 cache_size: int = 4):
        self.dataset, self.group, self.device, self.margin = dataset, group, device, margin
        self.whole = DeviceVolumes(dataset, group, device, cache_size)

    def around(self, subset: str, subject: int, points: Tensor) -> tuple[Tensor, Tensor]:
        if self.dataset.subset(subset).fits_cache(subject, self.group):
            return self.whole.around(subset, subject, points)
        corners = torch.stack([points.detach().amin(0), points.detach().amax(0)]).floor().cpu().numpy()
        lo = corners[0].astype(np.int64) - self.margin
        hi = corners[1].astype(np.int64) + 2 + self.margin
        region, origin = self.dataset.subset(subset).volume_region(subject, self.group, lo, hi)
        return (torch.from_numpy(region).to(self.device),
                points - torch.from_numpy(origin).to(device=points.device, dtype=points.dtype))


def volume_source(dataset: MultiSubjectDataset, group: str, device: torch.device,
                  cache_size: int) -> DeviceVolumes | VolumeRegions:
    """Regions read on demand for a lazy dataset, whole volumes on the device otherwise."""
    if dataset.lazy:
        return VolumeRegions(dataset, group, device, cache_size=cache_size)
    return DeviceVolumes(dataset, group, device, cache_size)
