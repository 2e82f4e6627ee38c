"""Per-batch steps: from a loaded batch to (loss, number of points). Chosen by ``step=``.

The trainer calls ``step(model, batch)`` and knows nothing else about the model.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from dwiml.data.dataset import MultiSubjectDataset
from dwiml.data.interpolation import trilinear
from dwiml.data.loader import Batch
from dwiml.data.streamlines import directions, offsets, point_streamline_ids


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
    and predicts the direction to the next point of ``batch.target_points``. With
    ``add_eos_target`` it also sees the last point, whose target is the end of the
    streamline (``eos_targets`` true, a zero direction).
    """

    def __init__(self, dataset: MultiSubjectDataset, input_group: str, device: str = "cpu",
                 volume_cache_size: int = 4, add_eos_target: bool = False):
        self.input_group = input_group
        self.add_eos_target = add_eos_target
        self.input_size = dataset.nb_features(input_group)
        self.device = torch.device(device)
        self.volumes = VolumeCache(dataset, input_group, self.device, volume_cache_size)

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[Tensor, int]:
        outputs, target_dirs, eos_targets, _ = self.outputs_and_targets(model, batch)
        return model.compute_loss(outputs, target_dirs, eos_targets)

    def outputs_and_targets(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        """The model's outputs, the target directions, the EOS targets (or None) and ``rows``
        ``(N,)`` bool: which points of the batch the outputs are for."""
        batch = batch.to(self.device)
        last = last_points(batch.lengths)
        rows = torch.ones_like(last) if self.add_eos_target else ~last
        points = batch.points[rows]
        inputs = self.interpolate(batch, points, batch.subjects[point_streamline_ids(batch.lengths)][rows])
        lengths = batch.lengths if self.add_eos_target else batch.lengths - 1
        outputs = model(inputs, lengths, segments(batch.points, batch.lengths)[rows])
        target_dirs = segments(batch.target_points, batch.lengths)[rows]
        return outputs, target_dirs, last if self.add_eos_target else None, rows

    def interpolate(self, batch: Batch, points: Tensor, point_subjects: Tensor) -> Tensor:
        """Input features at ``points``, each from its own subject's volume (one call per subject)."""
        subjects = torch.unique(point_subjects).tolist()
        first = self.volumes.get(batch.subset, subjects[0])
        inputs = torch.empty(len(points), first.shape[-1], dtype=first.dtype, device=self.device)
        for subject in subjects:
            mask = point_subjects == subject
            inputs[mask] = trilinear(self.volumes.get(batch.subset, subject), points[mask])
        return inputs


class StreamlinesStep:
    """The streamlines are the whole input: the model gets the packed points (no volume)
    and its loss compares its outputs with ``batch.target_points``. ``dataset`` is unused
    (every step is built with it)."""

    input_size = 3

    def __init__(self, dataset: MultiSubjectDataset, device: str = "cpu"):
        self.device = torch.device(device)

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[Tensor, int]:
        batch = batch.to(self.device)
        return model.compute_loss(model(batch.points, batch.lengths), batch.target_points)


def last_points(lengths: Tensor) -> Tensor:
    """``(N,)`` bool: true at the last point of each streamline."""
    last = torch.zeros(int(lengths.sum()), dtype=torch.bool, device=lengths.device)
    last[offsets(lengths) + lengths - 1] = True
    return last


def segments(points: Tensor, lengths: Tensor) -> Tensor:
    """``(N, 3)``: the segment vector from each point to the next, zeros at the last points."""
    vectors, start_ids = directions(points, lengths)
    return torch.zeros_like(points).index_copy_(0, start_ids, vectors)
