"""Batch loader: reads a batch's streamlines, resamples and augments them on the CPU.

It is a map-style dataset whose keys are the sampler's :class:`BatchSpec`, used as
``DataLoader(loader, sampler=sampler, batch_size=None)``, so loading runs in DataLoader
workers. Volumes are not touched here: interpolation happens on the device, in the step.
All transforms work on the packed points of the whole batch at once, in this order:
resampling (``step_size_mm`` or ``nb_points``, or ``compress_mm``: dipy's compression, whose
greedy algorithm runs along each streamline in compiled code; else the stored points are
kept), split, reverse, noise.

Randomness: each batch draws from its own generator seeded with ``BatchSpec.seed`` (the
sampler derives it from the run's seed, the epoch and the batch), so a batch is the same
whichever DataLoader worker, or the main process, loads it.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from dwiml.config.schema import LoaderConfig
from dwiml.data import streamlines as sl
from dwiml.data.dataset import SubjectSet
from dwiml.data.input_spec import Resampling
from dwiml.data.sampler import BatchSpec
from dwiml.errors import DwimlError
from dwiml.ranges import check_all, rules_of


@dataclass
class Batch:
    """Packed streamlines in dwiml voxel space.

    ``points`` are what the model sees (with forward noise), ``target_points`` what the
    loss compares with (with loss noise); both have ``lengths`` points per streamline.
    ``subjects`` gives each streamline's subject index in ``subset``. ``cut_ends`` ``(B,)``
    (None: none): the streamline's last point is where split augmentation cut it, not an end of
    the original streamline (no end-of-streamline target there).
    """

    points: Tensor
    target_points: Tensor
    lengths: Tensor
    subjects: Tensor
    subset: str
    cut_ends: Tensor | None = None

    def to(self, device: torch.device | str) -> "Batch":
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return Batch(**{k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v
                        for k, v in moved.items()})

    def __reduce__(self):
        """Pickled by value, as numpy arrays (a batch on the CPU): a DataLoader worker sends it through
        its pipe in one message, where each tensor would be a shared-memory file handed over on the
        main process's request (one round trip to the worker per tensor). A tensor given twice
        (points that are also the target points) stays one."""
        arrays: dict[int, np.ndarray] = {}
        values = (getattr(self, f.name) for f in fields(self))
        return _batch_from_arrays, tuple(arrays.setdefault(id(v), v.numpy()) if isinstance(v, Tensor) else v
                                         for v in values)


def _batch_from_arrays(*values) -> Batch:
    """The :class:`Batch` of :meth:`Batch.__reduce__`'s values (the arrays' memory, not a copy)."""
    tensors: dict[int, Tensor] = {}
    return Batch(*(tensors.setdefault(id(v), torch.from_numpy(v)) if isinstance(v, np.ndarray) else v
                   for v in values))


class BatchLoader(torch.utils.data.Dataset):
    """Turns a :class:`BatchSpec` into a :class:`Batch`.

    Noise sizes are standard deviations in mm, per axis, truncated at two of them.
    ``augment=False`` (validation) keeps the resampling and skips split, reverse and noise.
    """

    def __init__(self, subset: SubjectSet, streamline_group: str, step_size_mm: float | None = 1.0,
                 nb_points: int | None = None, reverse_ratio: float = 0.5, split_ratio: float = 0.0,
                 min_points_after_split: int = 5, noise_gaussian_size_forward: float = 0.0,
                 noise_gaussian_size_loss: float = 0.0, compress_mm: float | None = None, augment: bool = True):
        check_options(step_size_mm=step_size_mm, nb_points=nb_points, compress_mm=compress_mm,
                      reverse_ratio=reverse_ratio, split_ratio=split_ratio, min_points_after_split=min_points_after_split,
                      noise_gaussian_size_forward=noise_gaussian_size_forward,
                      noise_gaussian_size_loss=noise_gaussian_size_loss)
        self.subset, self.streamline_group = subset, streamline_group
        self.step_size_mm, self.nb_points, self.compress_mm = step_size_mm, nb_points, compress_mm
        self.reverse_ratio, self.split_ratio = reverse_ratio, split_ratio
        self.min_points_after_split = min_points_after_split
        self.noise_forward, self.noise_loss = noise_gaussian_size_forward, noise_gaussian_size_loss
        self.augment = augment

    @property
    def resampling(self) -> Resampling:
        return Resampling(self.step_size_mm, self.nb_points, self.compress_mm)

    def __getitem__(self, spec: BatchSpec) -> Batch:
        gen = torch.Generator().manual_seed(spec.seed)
        points, lengths, subjects = self._read(spec)
        voxel_sizes = self._voxel_sizes(spec, subjects, lengths)
        if self.step_size_mm is not None or self.nb_points is not None or self.compress_mm is not None:
            points, lengths = self.resample(points, lengths, voxel_sizes)
            voxel_sizes = self._voxel_sizes(spec, subjects, lengths)
        cut_ends = None
        if self.augment and self.split_ratio > 0:
            points, lengths, subjects, cut_starts, cut_ends = self._split(points, lengths, subjects, gen)
        if self.augment and self.reverse_ratio > 0:
            flip = torch.rand(len(lengths), generator=gen) < self.reverse_ratio
            points = sl.reverse(points, lengths, flip)
            if cut_ends is not None:
                cut_ends = torch.where(flip, cut_starts, cut_ends)
        target_points = points
        if self.augment and self.noise_forward > 0:
            points = points + _truncated_noise(points.shape, self.noise_forward, gen) / voxel_sizes
        if self.augment and self.noise_loss > 0:
            target_points = target_points + _truncated_noise(points.shape, self.noise_loss, gen) / voxel_sizes
        return Batch(points.float(), target_points.float(), lengths, subjects, self.subset.name, cut_ends)

    def _read(self, spec: BatchSpec) -> tuple[Tensor, Tensor, Tensor]:
        parts = [self.subset.streamlines(s, self.streamline_group, np.sort(ids))
                 for s, ids in zip(spec.subjects, spec.ids)]
        points = torch.from_numpy(np.concatenate([p for p, _ in parts]))
        lengths = torch.from_numpy(np.concatenate([l for _, l in parts])).long()
        subjects = torch.repeat_interleave(torch.tensor(spec.subjects), torch.tensor([len(l) for _, l in parts]))
        return points, lengths, subjects

    def _voxel_sizes(self, spec: BatchSpec, subjects: Tensor, lengths: Tensor) -> Tensor:
        """Voxel sizes of each point's subject, ``(N, 3)``."""
        table = torch.zeros(max(spec.subjects) + 1, 3, dtype=torch.float64)
        for s in spec.subjects:
            table[s] = torch.from_numpy(self.subset.voxel_sizes(s, self.streamline_group))
        return table[torch.repeat_interleave(subjects, lengths)]

    def resample(self, points: Tensor, lengths: Tensor, voxel_sizes: Tensor) -> tuple[Tensor, Tensor]:
        """Packed streamlines (voxel space, ``voxel_sizes`` of each point in mm) resampled by this loader's
        rule, which must be set (``step_size_mm``, ``nb_points`` or ``compress_mm``)."""
        if self.nb_points is not None:
            return sl.resample(points, lengths, voxel_sizes, torch.full_like(lengths, self.nb_points))
        if self.compress_mm is not None:
            return sl.compress(points, lengths, voxel_sizes, self.compress_mm)
        return sl.resample_step(points, lengths, voxel_sizes, self.step_size_mm)

    def _split(self, points, lengths, subjects, gen):
        """Cut a ``split_ratio`` share of the streamlines at a random point (both halves long enough).
        Also returns, per new streamline, whether its first and its last point are a cut."""
        m = self.min_points_after_split
        can = lengths >= 2 * m
        chosen = can & (torch.rand(len(lengths), generator=gen) < self.split_ratio)
        span = (lengths - 2 * m + 1).clamp_min(1)
        cut = torch.where(chosen, m + (torch.rand(len(lengths), generator=gen) * span).long(), 0)
        new_lengths, source = sl.split(lengths, cut)
        same_as_next = torch.zeros(len(source), dtype=torch.bool)
        same_as_next[:-1] = source[1:] == source[:-1]  # the first half of a split streamline
        cut_starts = torch.roll(same_as_next, 1)  # the second half
        return points, new_lengths, subjects[source], cut_starts, same_as_next


def _truncated_noise(shape: torch.Size, sigma_mm: float, gen: torch.Generator) -> Tensor:
    """Gaussian noise in mm, truncated (not clipped) at two standard deviations."""
    noise = torch.empty(shape, dtype=torch.float64)
    return torch.nn.init.trunc_normal_(noise, std=sigma_mm, a=-2 * sigma_mm, b=2 * sigma_mm, generator=gen)


def check_options(**options: float | int | None) -> None:
    """One-line errors naming the ``loader`` key at fault: a value out of its rule (see
    :class:`~dwiml.config.schema.LoaderConfig`), or two ways of resampling at once."""
    check_all(options, rules_of(LoaderConfig), "loader.".__add__)
    chosen = {k: options[k] for k in ("step_size_mm", "nb_points", "compress_mm") if options.get(k) is not None}
    if len(chosen) > 1:
        raise DwimlError(f"loader: {' and '.join(f'{k}={v}' for k, v in chosen.items())} are set together; "
                         "set one of them, or none to keep the stored points")
