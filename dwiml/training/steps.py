"""Per-batch steps: from a loaded batch to (loss, number of points). Chosen by ``step=``.

The trainer calls ``step(model, batch)`` and knows nothing else about the model.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from dwiml.data import neighborhood
from dwiml.data.dataset import MultiSubjectDataset
from dwiml.data.loader import Batch
from dwiml.data.streamlines import directions, point_streamline_ids


class VolumeCache:
    """The last ``size`` volumes used, as tensors on the device (least recently used evicted)."""

    def __init__(self, dataset: MultiSubjectDataset, group: str, device: torch.device, size: int):
        self.dataset, self.group, self.device, self.size = dataset, group, device, size
        self._volumes: OrderedDict[tuple[str, int], Tensor] = OrderedDict()

    def get(self, subset: str, subject: int) -> Tensor:
        key = (subset, subject)
        if key in self._volumes:
            self._volumes.move_to_end(key)
        else:
            array = self.dataset.subset(subset).volume(subject, self.group)
            self._volumes[key] = torch.from_numpy(array).to(self.device)
            if len(self._volumes) > self.size:
                self._volumes.popitem(last=False)
        return self._volumes[key]


class OneInputStep:
    """Interpolate one input volume group at every point, run the model, compute the loss.

    The model sees points ``0 .. n-2`` of each streamline (where a next direction exists)
    and predicts the direction to the next point of ``batch.target_points``. With a
    neighbourhood (see :mod:`dwiml.data.neighborhood`), a point's input is the features at
    its ``K`` neighbour points one after the other: ``input_size = K * nb_features``.
    """

    def __init__(self, dataset: MultiSubjectDataset, input_group: str, device: str = "cpu",
                 volume_cache_size: int = 4, neighborhood_type: str = "none",
                 neighborhood_radius_mm: float | None = None, neighborhood_nb_rings: int = 1):
        self.dataset, self.input_group = dataset, input_group
        self.neighborhood = neighborhood.Neighborhood(neighborhood_type, neighborhood_radius_mm, neighborhood_nb_rings)
        self.input_size = dataset.nb_features(input_group) * len(self.neighborhood)
        self.device = torch.device(device)
        self.volumes = VolumeCache(dataset, input_group, self.device, volume_cache_size)

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[Tensor, int]:
        batch = batch.to(self.device)
        target_dirs, start_ids = directions(batch.target_points, batch.lengths)
        input_dirs, _ = directions(batch.points, batch.lengths)
        points = batch.points[start_ids]
        inputs = self.interpolate(batch, points, batch.subjects[point_streamline_ids(batch.lengths)][start_ids])
        outputs = model(inputs, batch.lengths - 1, input_dirs)
        return model.compute_loss(outputs, target_dirs)

    def interpolate(self, batch: Batch, points: Tensor, point_subjects: Tensor) -> Tensor:
        """Input features at ``points`` and their neighbours, each from its own subject's volume
        (one call per subject); zeros outside the volume."""
        subjects = torch.unique(point_subjects).tolist()
        first = self.volumes.get(batch.subset, subjects[0])
        inputs = torch.empty(len(points), self.input_size, dtype=first.dtype, device=self.device)
        for subject in subjects:
            mask = point_subjects == subject
            voxel_sizes = self.dataset.subset(batch.subset).voxel_sizes(subject, self.input_group)
            offsets = self.neighborhood.offsets_vox(torch.from_numpy(voxel_sizes))
            inputs[mask] = neighborhood.interpolate(self.volumes.get(batch.subset, subject), points[mask], offsets)
        return inputs
