"""Batch sampler: which streamlines of which subjects go into each batch.

A batch holds streamlines of at most ``nb_subjects_per_batch`` subjects (so a lazy
dataset reads few volumes per batch), chosen among the subjects that still have unseen
streamlines. Its size is counted in streamlines (``unit="nb_streamlines"``) or in total
length (``unit="length_mm"``), shared equally between its subjects. Every streamline is
seen once per epoch. Rules at the edges:

- ``nb_streamlines``: a batch takes at most ``batch_size`` subjects, one streamline each
  when ``batch_size`` is smaller than ``nb_subjects_per_batch``;
- ``length_mm``: each subject gives at least one streamline, so a streamline longer than
  its share of the budget makes a batch of its own (from that subject).

The order is a pure function of ``(seed, epoch)``: training shuffles, validation keeps the
stored order, and the sampler's state is only its epoch. Each batch carries its own seed,
from which the loader draws its augmentations, so batches are reproducible whatever the
number of DataLoader workers.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from dwiml.data.dataset import SubjectSet
from dwiml.errors import DwimlError

UNITS = ("nb_streamlines", "length_mm")


@dataclass(frozen=True)
class BatchSpec:
    """The streamlines of one batch: ``ids[i]`` of subject ``subjects[i]``, and a seed."""

    subjects: tuple[int, ...]
    ids: tuple[np.ndarray, ...]
    seed: int

    def __len__(self) -> int:
        return sum(len(i) for i in self.ids)


class BatchSampler(torch.utils.data.Sampler):
    """Yields one :class:`BatchSpec` per batch of a subset's streamline group."""

    def __init__(self, subset: SubjectSet, streamline_group: str, batch_size: float,
                 unit: str = "nb_streamlines", nb_subjects_per_batch: int = 1,
                 shuffle: bool = True, seed: int = 1234):
        if unit not in UNITS:
            raise DwimlError(f"sampler.unit must be one of {UNITS}, got '{unit}'")
        if batch_size <= 0 or nb_subjects_per_batch < 1:
            raise DwimlError("sampler.batch_size and sampler.nb_subjects_per_batch must be positive")
        subset._check(streamline_group, "streamlines")
        self.lengths_mm = [subset.index[i, streamline_group].lengths_mm for i in range(len(subset))]
        self.batch_size, self.unit = batch_size, unit
        self.nb_subjects_per_batch = nb_subjects_per_batch
        if unit == "nb_streamlines":
            self.nb_subjects_per_batch = min(nb_subjects_per_batch, int(batch_size))
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])

    def __iter__(self) -> Iterator[BatchSpec]:
        rng = np.random.default_rng([self.seed, self.epoch, int(self.shuffle)])
        order = [rng.permutation(len(l)) if self.shuffle else np.arange(len(l)) for l in self.lengths_mm]
        cumulative = [np.cumsum(l[o]) for l, o in zip(self.lengths_mm, order)]
        position = np.zeros(len(order), dtype=np.int64)
        remaining = np.array([len(o) for o in order])
        while remaining.sum() > 0:
            available = np.flatnonzero(remaining > 0)
            k = min(self.nb_subjects_per_batch, len(available))
            chosen = np.sort(rng.choice(available, k, replace=False)) if self.shuffle else available[:k]
            takes = [self._take(cumulative[s], position[s], i, len(chosen)) for i, s in enumerate(chosen)]
            ids = tuple(order[s][position[s]:position[s] + t] for s, t in zip(chosen, takes))
            position[chosen] += takes
            remaining[chosen] -= takes
            yield BatchSpec(tuple(int(s) for s in chosen), ids, int(rng.integers(2**31)))

    def _take(self, cumulative: np.ndarray, start: int, rank: int, nb_chosen: int) -> int:
        """How many streamlines the ``rank``-th chosen subject gives, from ``start`` on."""
        left = len(cumulative) - start
        if self.unit == "nb_streamlines":
            share = int(self.batch_size) // nb_chosen + (rank < int(self.batch_size) % nb_chosen)
            return min(left, share)
        before = cumulative[start - 1] if start > 0 else 0.0
        fit = int(np.searchsorted(cumulative[start:], before + self.batch_size / nb_chosen, side="right"))
        return min(left, max(1, fit))

    def __len__(self) -> int:
        return sum(1 for _ in self)
