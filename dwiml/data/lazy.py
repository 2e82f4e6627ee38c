"""Lazy reads from a dwiml HDF5 with bounded memory.

- :class:`LRUCache`: arrays under keys, at most ``max_bytes`` in total, least recently used
  evicted first. One cache serves all subsets of a dataset (keys hold the subject's name).
- :class:`HDF5Reader`: one file handle per process (reopened after a fork; dropped, with
  the cache's content, when pickled for DataLoader workers), counting its reads.
- Volumes are read and cached in blocks of the dataset's own chunk grid (all features of
  a spatial block): a region read touches only the chunks overlapping the region, and
  repeated batches of the same subjects (the sampler's ``cycles``) find their blocks in
  the cache. Memory is bounded by the cache's byte budget plus the regions in use.
- Streamlines of a batch are read in one HDF5 read per subject and group, however
  scattered they are: the requested point ranges, sorted and merged across gaps shorter
  than one chunk, form one selection (a union of row slices). A merged gap cannot hold a
  whole chunk, so the read touches exactly the chunks that the requested streamlines
  touch. Streamline points are not cached: batches draw them at random, so they would
  only push volume blocks out of the cache.
"""
from __future__ import annotations

import itertools
import os
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

import h5py
import numpy as np
from h5py import h5s

# Virtual chunk shapes for datasets stored contiguous (no chunks).
CONTIGUOUS_BLOCK = (32, 32, 32)
CONTIGUOUS_ROWS = 4096  # ~50 kB of points: merging a smaller gap is cheaper than one more read


class LRUCache:
    """Arrays under keys, at most ``max_bytes`` in total; the least recently used go first.

    An array larger than the whole budget is returned but not kept.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __getstate__(self) -> dict:
        return {"max_bytes": self.max_bytes}  # a copy sent to another process starts empty

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["max_bytes"])

    def get(self, key: Hashable, load: Callable[[], np.ndarray]) -> np.ndarray:
        """The array under ``key``, from ``load()`` (and kept) when it is not cached."""
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        array = load()
        if array.nbytes <= self.max_bytes:
            self._items[key] = array
            self.nbytes += array.nbytes
            while self.nbytes > self.max_bytes:
                self.nbytes -= self._items.popitem(last=False)[1].nbytes
        return array


class HDF5Reader:
    """Slice reads from one HDF5 file, through a byte-bounded cache for volume blocks.

    ``nb_reads`` and ``bytes_read`` count what this process read from the file.
    """

    def __init__(self, path: Path, cache_bytes: int):
        self.path = path
        self.cache = LRUCache(cache_bytes)
        self.nb_reads, self.bytes_read = 0, 0
        self._h5: h5py.File | None = None
        self._datasets: dict[str, h5py.Dataset] = {}
        self._pid = -1

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_h5": None, "_datasets": {}, "_pid": -1, "nb_reads": 0, "bytes_read": 0}

    def dataset(self, name: str) -> h5py.Dataset:
        """Dataset ``name`` of this process's handle (opened on first use, reopened after a fork)."""
        if self._h5 is None or self._pid != os.getpid():
            self._h5, self._datasets, self._pid = h5py.File(self.path, "r"), {}, os.getpid()
        if name not in self._datasets:
            self._datasets[name] = self._h5[name]
        return self._datasets[name]

    def read(self, name: str, index: tuple[slice, ...]) -> np.ndarray:
        """One slice read of dataset ``name``."""
        array = self.dataset(name)[index]
        self.nb_reads += 1
        self.bytes_read += array.nbytes
        return array

    def rows(self, name: str, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Rows ``starts[i] : starts[i] + lengths[i]`` of dataset ``name``, concatenated in that order."""
        chunks = self.dataset(name).chunks
        max_gap = chunks[0] - 1 if chunks else CONTIGUOUS_ROWS
        run_starts, run_ends = merge_ranges(starts, starts + lengths, max_gap)
        block = self.read_runs(name, run_starts, run_ends)
        run = np.searchsorted(run_starts, starts, side="right") - 1
        run_offsets = np.cumsum(run_ends - run_starts) - (run_ends - run_starts)
        return block[ranges(run_offsets[run] + starts - run_starts[run], lengths)]

    def read_runs(self, name: str, run_starts: Sequence[int], run_ends: Sequence[int]) -> np.ndarray:
        """Rows ``[run_starts[i], run_ends[i])`` of dataset ``name`` (sorted, disjoint runs),
        concatenated, in one read: a selection that is the union of the runs."""
        dset = self.dataset(name)
        total = int(np.sum(np.subtract(run_ends, run_starts)))
        out = np.empty((total, *dset.shape[1:]), dtype=dset.dtype)
        if total:
            selection = dset.id.get_space()
            selection.select_none()
            zeros = (0,) * (dset.ndim - 1)
            for start, end in zip(run_starts, run_ends):
                if end > start:
                    selection.select_hyperslab((int(start), *zeros), (int(end - start), *dset.shape[1:]),
                                               op=h5s.SELECT_OR)
            dset.id.read(h5s.create_simple(out.shape), selection, out)
        self.nb_reads += 1
        self.bytes_read += out.nbytes
        return out

    def region(self, name: str, lo: np.ndarray, hi: np.ndarray, key: Hashable) -> np.ndarray:
        """Voxels ``[lo, hi)`` (all features) of a 4D dataset, assembled from cached chunk blocks.

        ``lo`` and ``hi`` must lie inside the volume; ``key`` names the volume in the cache.
        """
        dset = self.dataset(name)
        block = dset.chunks[:3] if dset.chunks else CONTIGUOUS_BLOCK
        out = np.empty((*(hi - lo), dset.shape[3]), dtype=dset.dtype)
        axes = [_blocks(int(a), int(b), c, n) for a, b, c, n in zip(lo, hi, block, dset.shape)]
        for parts in itertools.product(*axes):
            start, in_file, in_out, in_block = zip(*parts)
            data = self.cache.get((key, start), lambda: self.read(name, in_file))
            out[in_out] = data[in_block]
        return out


def merge_ranges(starts: np.ndarray, ends: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort the ranges ``[starts, ends)`` and merge those separated by at most ``max_gap``.

    Returns the merged runs' starts and ends, sorted.
    """
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], np.maximum.accumulate(ends[order])
    new_run = np.ones(len(starts), dtype=bool)
    new_run[1:] = starts[1:] - ends[:-1] > max_gap
    last_of_run = np.append(new_run[1:], True)
    return starts[new_run], ends[last_of_run]


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The indices ``starts[i] .. starts[i] + lengths[i] - 1`` of every range, concatenated."""
    lengths = np.asarray(lengths, dtype=np.int64)
    before = np.cumsum(lengths) - lengths
    return np.repeat(np.asarray(starts, dtype=np.int64) - before, lengths) + np.arange(int(lengths.sum()))


def _blocks(lo: int, hi: int, size: int, length: int) -> list[tuple[int, slice, slice, slice]]:
    """Along one axis, the blocks of ``size`` overlapping ``[lo, hi)``: their start, their extent
    in the file, and where their overlap with ``[lo, hi)`` lies in the region and in the block."""
    blocks = []
    for start in range(lo - lo % size, hi if hi > lo else lo, size):
        a, b = max(lo, start), min(hi, start + size)
        blocks.append((start, slice(start, min(start + size, length)), slice(a - lo, b - lo),
                       slice(a - start, b - start)))
    return blocks
