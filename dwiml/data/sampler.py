"""Batch sampler: which streamlines of which subjects go into each batch.

**Passes.** A *pass* sees every streamline of the subset once. Its batches are a pure
function of ``(seed, pass)``: subjects are drawn ``nb_subjects_per_batch`` at a time
(weighted by their unseen streamlines, so they run out together), and the chosen
subjects give ``cycles`` consecutive batches (so a lazy dataset keeps their volumes
cached) before new ones are drawn. A batch's size is counted in streamlines
(``unit="nb_streamlines"``) or in total length (``unit="length_mm"``), shared equally
between the subjects still holding streamlines. Each batch carries its own seed, a pure
function of ``(seed, pass, batch index in the pass)``, from which the loader draws its
augmentations: batches are reproducible whatever the number of DataLoader workers.

**Epochs.** Training passes are concatenated into one stream of batches, and epochs cut
it in consecutive pieces, so an epoch capped by ``max_batches`` continues where the
previous one stopped: every streamline is seen before any is seen twice. Epoch ``e``
(counted from 0) is a pure function of ``(seed, e, max_batches, world_size)``;
``set_epoch(e, max_batches, start_batch)`` selects it, and ``start_batch`` skips the
batches an interrupted run already trained on. Without a cap an epoch is one pass.
Validation (``shuffle=False``) keeps the stored order and gives the same batches every
epoch (the first ``max_batches`` when capped).

**Ranks.** With ``world_size`` W, rank r takes batches r, r+W, r+2W, ... of the epoch:
the ranks get disjoint batches that together cover it. A training epoch is rounded up
to a multiple of W global batches by borrowing the first batches of the next pass (they
are then not repeated in the next epoch), so every rank does the same number of
optimizer steps, and nothing is dropped or seen twice. Validation is not rounded.

Edge cases, by design rather than errors:

- ``nb_streamlines``: a batch takes at most ``batch_size`` subjects, one streamline each
  when ``batch_size`` is smaller than ``nb_subjects_per_batch``;
- ``length_mm``: each subject gives at least one streamline, so a streamline longer than
  its share of the budget makes a batch of its own (from that subject).
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from dwiml.data.dataset import SubjectSet
from dwiml.config.schema import SamplerConfig
from dwiml.errors import DwimlError
from dwiml.ranges import check_all, rules_of



@dataclass(frozen=True)
class BatchSpec:
    """The streamlines of one batch: ``ids[i]`` of subject ``subjects[i]``, a seed, and
    where it sits: batch ``position`` of pass ``pass_index``."""

    subjects: tuple[int, ...]
    ids: tuple[np.ndarray, ...]
    seed: int
    pass_index: int = 0
    position: int = 0

    def __len__(self) -> int:
        return sum(len(i) for i in self.ids)


def check_batch_size(batch_size: float | None, unit: str, key: str) -> None:
    """A one-line error for a batch of less than one streamline (``unit=nb_streamlines``)."""
    if unit == "nb_streamlines" and batch_size is not None and batch_size < 1:
        raise DwimlError(f"{key}: {batch_size} streamlines must be at least 1")


class BatchSampler(torch.utils.data.Sampler):
    """Yields one :class:`BatchSpec` per batch of a subset's streamline group."""

    def __init__(self, subset: SubjectSet, streamline_group: str, batch_size: float,
                 unit: str = "nb_streamlines", nb_subjects_per_batch: int = 2, cycles: int = 1,
                 shuffle: bool = True, seed: int = 1234, rank: int = 0, world_size: int = 1):
        check_all(dict(batch_size=batch_size, unit=unit, nb_subjects_per_batch=nb_subjects_per_batch, cycles=cycles,
                       seed=seed), rules_of(SamplerConfig), "sampler.".__add__)
        check_batch_size(batch_size, unit, "sampler.batch_size")
        if not 0 <= rank < world_size:
            raise DwimlError(f"sampler: rank {rank} outside world_size {world_size}")
        subset.check_group(streamline_group, "streamlines")
        self.lengths_mm = [subset.index[i, streamline_group].lengths_mm for i in range(len(subset))]
        if sum(len(l) for l in self.lengths_mm) == 0:
            raise DwimlError(f"{subset.name} set: no streamlines in group '{streamline_group}'")
        self.batch_size, self.unit, self.cycles = batch_size, unit, cycles
        self.nb_subjects_per_batch = nb_subjects_per_batch
        if unit == "nb_streamlines":
            self.nb_subjects_per_batch = min(nb_subjects_per_batch, int(batch_size))
        self.shuffle, self.seed, self.rank, self.world_size = shuffle, seed, rank, world_size
        self._pass_lengths: dict[int, int] = {}
        self._passes: dict[int, list[BatchSpec]] = {}
        self.set_epoch(0)

    def set_epoch(self, epoch: int, max_batches: int | None = None, start_batch: int = 0) -> None:
        """Select epoch ``epoch`` (from 0) of at most ``max_batches`` batches per rank,
        skipping its first ``start_batch`` batches of this rank."""
        self.epoch, self.max_batches, self.start_batch = epoch, max_batches, start_batch
        w = self.world_size
        if not self.shuffle:
            n = self._pass_length(0)
            self._start, self._nb_global = 0, n if max_batches is None else min(n, max_batches * w)
        elif max_batches is not None:
            self._start, self._nb_global = epoch * max_batches * w, max_batches * w
        else:
            start = 0
            for _ in range(epoch):
                start += self._rest_of_pass(start)
            self._start, self._nb_global = start, self._rest_of_pass(start)

    def state_dict(self) -> dict:
        """The epoch in progress and the pass lengths known so far (a cache of pure values)."""
        return {"epoch": self.epoch, "max_batches": self.max_batches, "start_batch": self.start_batch,
                "pass_lengths": dict(self._pass_lengths)}

    def load_state_dict(self, state: dict) -> None:
        self._pass_lengths.update({int(k): int(v) for k, v in state["pass_lengths"].items()})
        self.set_epoch(state["epoch"], state["max_batches"], state["start_batch"])

    def __iter__(self) -> Iterator[BatchSpec]:
        first = self.rank + self.start_batch * self.world_size
        return itertools.islice(self._stream(self._start), first, self._nb_global, self.world_size)

    def __len__(self) -> int:
        return len(range(self.rank + self.start_batch * self.world_size, self._nb_global, self.world_size))

    def position_of(self, batch: int) -> tuple[int, int]:
        """(pass, position in the pass) of this rank's ``batch``-th batch of the current epoch."""
        index = self._start + self.rank + batch * self.world_size
        return self._locate(index) if self.shuffle else (0, index)

    def _rest_of_pass(self, start: int) -> int:
        """Global batches from ``start`` to the end of its pass, rounded up to a multiple of world_size."""
        pass_index, position = self._locate(start)
        return math.ceil((self._pass_length(pass_index) - position) / self.world_size) * self.world_size

    def _locate(self, index: int) -> tuple[int, int]:
        """(pass, position in the pass) of the ``index``-th batch of the stream."""
        pass_index = 0
        while index >= self._pass_length(pass_index):
            index -= self._pass_length(pass_index)
            pass_index += 1
        return pass_index, index

    def _stream(self, start: int) -> Iterator[BatchSpec]:
        """The stream of batches from global index ``start`` on (passes one after another)."""
        pass_index, position = self._locate(start) if self.shuffle else (0, start)
        while True:
            yield from self._pass(pass_index)[position:]
            pass_index, position = pass_index + int(self.shuffle), 0

    def _pass_length(self, pass_index: int) -> int:
        if pass_index not in self._pass_lengths:
            self._pass(pass_index)
        return self._pass_lengths[pass_index]

    def _pass(self, pass_index: int) -> list[BatchSpec]:
        """The batches of one pass (the last two passes built are kept)."""
        if pass_index not in self._passes:
            self._passes = {p: b for p, b in self._passes.items() if p == pass_index - 1}
            self._passes[pass_index] = self._make_pass(pass_index)
            self._pass_lengths[pass_index] = len(self._passes[pass_index])
        return self._passes[pass_index]

    def _make_pass(self, pass_index: int) -> list[BatchSpec]:
        rng = np.random.default_rng([self.seed, pass_index])
        order = [rng.permutation(len(l)) if self.shuffle else np.arange(len(l)) for l in self.lengths_mm]
        cumulative = [np.cumsum(l[o]) for l, o in zip(self.lengths_mm, order)]
        position = np.zeros(len(order), dtype=np.int64)
        remaining = np.array([len(o) for o in order])
        batches: list[BatchSpec] = []
        while remaining.sum() > 0:
            chosen = self._choose_subjects(rng, remaining)
            for _ in range(self.cycles):
                chosen = chosen[remaining[chosen] > 0]
                if len(chosen) == 0:
                    break
                takes = np.array([self._take(cumulative[s], position[s], i, len(chosen))
                                  for i, s in enumerate(chosen)])
                ids = tuple(order[s][position[s]:position[s] + t] for s, t in zip(chosen, takes))
                position[chosen] += takes
                remaining[chosen] -= takes
                seed = int(np.random.SeedSequence([self.seed, pass_index, len(batches)]).generate_state(1)[0])
                batches.append(BatchSpec(tuple(int(s) for s in chosen), ids, seed, pass_index, len(batches)))
        return batches

    def _choose_subjects(self, rng: np.random.Generator, remaining: np.ndarray) -> np.ndarray:
        """Subjects of the next batches: drawn by their unseen streamlines, or in stored order."""
        available = np.flatnonzero(remaining > 0)
        k = min(self.nb_subjects_per_batch, len(available))
        if not self.shuffle:
            return available[:k]
        weights = remaining[available] / remaining[available].sum()
        return np.sort(rng.choice(available, k, replace=False, p=weights))

    def _take(self, cumulative: np.ndarray, start: int, rank: int, nb_chosen: int) -> int:
        """How many streamlines the ``rank``-th chosen subject gives, from ``start`` on."""
        left = len(cumulative) - start
        if self.unit == "nb_streamlines":
            share = int(self.batch_size) // nb_chosen + (rank < int(self.batch_size) % nb_chosen)
            return min(left, share)
        before = cumulative[start - 1] if start > 0 else 0.0
        fit = int(np.searchsorted(cumulative[start:], before + self.batch_size / nb_chosen, side="right"))
        return min(left, max(1, fit))
