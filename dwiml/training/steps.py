"""Per-batch steps: from a loaded batch to (loss, number of points). Chosen by ``step=``.

The trainer calls ``step(model, batch)`` and knows nothing else about the model.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from dwiml.data.dataset import MultiSubjectDataset
from dwiml.data.interpolation import trilinear
from dwiml.data.loader import Batch
from dwiml.data.streamlines import directions, point_streamline_ids
from dwiml.data.volumes import volume_source


class OneInputStep:
    """Interpolate one input volume group at every point, run the model, compute the loss.

    The model sees points ``0 .. n-2`` of each streamline (where a next direction exists)
    and predicts the direction to the next point of ``batch.target_points``.
    """

    def __init__(self, dataset: MultiSubjectDataset, input_group: str, device: str = "cpu",
                 volume_cache_size: int = 4):
        self.input_group = input_group
        self.input_size = dataset.nb_features(input_group)
        self.device = torch.device(device)
        self.volumes = volume_source(dataset, input_group, self.device, volume_cache_size)

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[Tensor, int]:
        batch = batch.to(self.device)
        target_dirs, start_ids = directions(batch.target_points, batch.lengths)
        input_dirs, _ = directions(batch.points, batch.lengths)
        points = batch.points[start_ids]
        inputs = self.interpolate(batch, points, batch.subjects[point_streamline_ids(batch.lengths)][start_ids])
        outputs = model(inputs, batch.lengths - 1, input_dirs)
        return model.compute_loss(outputs, target_dirs)

    def interpolate(self, batch: Batch, points: Tensor, point_subjects: Tensor) -> Tensor:
        """Input features at ``points``, each from its own subject's volume (one call per subject)."""
        inputs = torch.empty(len(points), self.input_size, dtype=torch.float32, device=self.device)
        for subject in torch.unique(point_subjects).tolist():
            mask = point_subjects == subject
            volume, local_points = self.volumes.around(batch.subset, subject, points[mask])
            inputs[mask] = trilinear(volume, local_points)
        return inputs
