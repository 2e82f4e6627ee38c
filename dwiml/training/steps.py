"""Per-batch steps: from a loaded batch to (loss, number of points). Chosen by ``step=``.

The trainer calls ``step(model, batch)`` and knows nothing else about the model. A step also gives
the model's ``input_size`` and its :class:`~dwiml.data.input_spec.InputSpec` (None when the model
takes no input volume), saved with the model.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from dwiml import __version__
from dwiml.data import neighborhood
from dwiml.data.dataset import MultiSubjectDataset
from dwiml.data.input_spec import InputSpec, Resampling, VolumeDescription
from dwiml.data.interpolation import trilinear
from dwiml.data.loader import Batch
from dwiml.data.streamlines import directions, offsets, point_streamline_ids
from dwiml.data.volumes import volume_source


class OneInputStep:
    """Interpolate one input volume group at every point, run the model, compute the loss.

    The model sees points ``0 .. n-2`` of each streamline (where a next direction exists)
    and predicts the direction to the next point of ``batch.target_points``. With
    ``add_eos_target`` it also sees the last point, whose target is the end of the
    streamline (``eos_targets`` true, a zero direction), except where split augmentation cut the
    streamline there (``Batch.cut_ends``: not an end). With a neighbourhood (see
    :mod:`dwiml.data.neighborhood`), a point's input is the features at its ``K`` neighbour
    points one after the other: ``input_size = K * nb_features``.
    """

    def __init__(self, dataset: MultiSubjectDataset, input_group: str, device: str = "cpu",
                 volume_cache_size: int = 4, add_eos_target: bool = False, neighborhood_type: str = "none",
                 neighborhood_radius_mm: float | None = None, neighborhood_nb_rings: int = 1):
        self.dataset, self.input_group = dataset, input_group
        self.add_eos_target = add_eos_target
        self.neighborhood = neighborhood.Neighborhood(neighborhood_type, neighborhood_radius_mm, neighborhood_nb_rings)
        self.input_size = dataset.nb_features(input_group) * len(self.neighborhood)
        self.device = torch.device(device)
        self.volumes = volume_source(dataset, input_group, self.device, volume_cache_size)

    @classmethod
    def from_spec(cls, dataset: MultiSubjectDataset, spec: InputSpec, device: str = "cpu") -> OneInputStep:
        """The step that gives a trained model the inputs of its training, from ``dataset``."""
        n = spec.neighborhood
        return cls(dataset, spec.input_group, device, add_eos_target=spec.add_eos_target,
                   neighborhood_type=n.kind, neighborhood_radius_mm=n.radius_mm, neighborhood_nb_rings=n.nb_rings)

    def input_spec(self, streamline_group: str, resampling: Resampling) -> InputSpec:
        """What the model trained by this step eats, the loader resampling ``streamline_group`` with ``resampling``."""
        training = self.dataset.training
        voxel_sizes = {tuple(round(float(v), 6) for v in training.voxel_sizes(i, self.input_group))
                       for i in range(len(training))}
        return InputSpec(self.input_group, VolumeDescription.from_attrs(training.attrs[0, self.input_group]),
                         self.neighborhood, streamline_group, resampling,
                         Resampling.from_attrs(training.attrs[0, streamline_group]), self.add_eos_target,
                         tuple(sorted(voxel_sizes)), __version__)

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[Tensor, int]:
        outputs, target_dirs, eos_targets, _ = self.outputs_and_targets(model, batch)
        return model.compute_loss(outputs, target_dirs, eos_targets)

    def outputs_and_targets(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        """The model's outputs, the target directions, the EOS targets (or None) and ``rows``
        ``(N,)`` bool: which points of the batch the outputs are for."""
        model_inputs, target_dirs, eos_targets, rows = self.model_inputs(batch)
        return model(*model_inputs), target_dirs, eos_targets, rows

    def model_inputs(self, batch: Batch) -> tuple[tuple[Tensor, Tensor, Tensor], Tensor, Tensor | None, Tensor]:
        """The model's arguments ``(inputs, lengths, directions)``, the target directions, the EOS
        targets (or None) and ``rows`` (see :meth:`outputs_and_targets`)."""
        batch = batch.to(self.device)
        last = last_points(batch.lengths)
        # The last point is seen (with an end target) only where it ends the original streamline.
        with_last = torch.full_like(batch.lengths, self.add_eos_target, dtype=torch.bool)
        if self.add_eos_target and batch.cut_ends is not None:
            with_last = ~batch.cut_ends
        streamline_ids = point_streamline_ids(batch.lengths)
        rows = ~last | with_last[streamline_ids]
        points = batch.points[rows]
        inputs = self.interpolate(batch, points, batch.subjects[streamline_ids][rows])
        lengths = batch.lengths - (~with_last).long()
        target_dirs = segments(batch.target_points, batch.lengths)[rows]
        model_inputs = (inputs, lengths, segments(batch.points, batch.lengths)[rows])
        return model_inputs, target_dirs, last[rows] if self.add_eos_target else None, rows

    def interpolate(self, batch: Batch, points: Tensor, point_subjects: Tensor) -> Tensor:
        """Input features at ``points`` and their neighbours, each from its own subject's volume
        (one call per subject); zeros outside the volume."""
        inputs = torch.empty(len(points), self.input_size, dtype=torch.float32, device=self.device)
        for subject in torch.unique(point_subjects).tolist():
            mask = point_subjects == subject
            voxel_sizes = self.dataset.subset(batch.subset).voxel_sizes(subject, self.input_group)
            offsets_vox = self.neighborhood.offsets_vox(torch.from_numpy(voxel_sizes))
            neighbours = neighborhood.neighbour_points(points[mask], offsets_vox)
            volume, local_points = self.volumes.around(batch.subset, subject, neighbours)
            inputs[mask] = trilinear(volume, local_points).view(len(neighbours) // len(offsets_vox), -1)
        return inputs


class StreamlinesStep:
    """The streamlines are the whole input: the model gets the packed points (no volume)
    and its loss compares its outputs with ``batch.target_points``. ``dataset`` is unused
    (every step is built with it)."""

    input_size = 3

    def __init__(self, dataset: MultiSubjectDataset, device: str = "cpu"):
        self.device = torch.device(device)

    def input_spec(self, streamline_group: str, resampling: Resampling) -> None:
        """None: the model takes no input volume (it cannot track)."""
        return None

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
