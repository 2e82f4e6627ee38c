"""Splitting one subject's seeds across jobs (``--seed-shard I/N``) and merging their tractograms.

Every job generates the same seeds (the same mask, counts and ``rng_seed``). The tracker takes them
in chunks of ``batch_size`` seeds, chunk ``k`` holding seeds ``k * batch_size`` onwards, and each
chunk draws its random numbers from its own generator, seeded from ``(rng_seed, k)``: a chunk's
streamlines depend on that chunk alone. Shard ``I`` of ``N`` tracks the chunks
``[(I - 1) * C // N, I * C // N)`` of the ``C`` chunks, so the shards are disjoint, cover every
seed, and their streamlines, ordered by seed, are those of one job with the same options
(``batch_size`` included), probabilistic tracking too.

Each streamline carries the index of its seed (``data_per_streamline["seed_ids"]``);
:func:`merge_shards` sorts the shards' streamlines by it. A ``.trk`` stores it as float32, exact
up to 2**24 seeds (use ``.trx`` beyond).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from dipy.io.streamline import load_tractogram
from dipy.io.utils import is_header_compatible

from dwiml.errors import DwimlError
from dwiml.tracking.output import save_tractogram_atomic

SEED_IDS = "seed_ids"


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int = 1
    count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count:
            raise DwimlError(f"seed shard {self.index}/{self.count}: need 1 <= I <= N")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/N"``."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if match is None:
            raise DwimlError(f"seed shard '{text}': expected I/N, e.g. 2/8")
        return cls(int(match[1]), int(match[2]))

    def seed_range(self, nb_seeds: int, batch_size: int) -> range:
        """The indices of this shard's seeds: whole chunks of ``batch_size``."""
        nb_chunks = -(-nb_seeds // batch_size)
        first, last = ((i * nb_chunks) // self.count for i in (self.index - 1, self.index))
        return range(min(first * batch_size, nb_seeds), min(last * batch_size, nb_seeds))


def chunk_rng_seed(rng_seed: int, chunk: int) -> int:
    """The seed of chunk ``chunk``'s generator (numpy's ``SeedSequence`` of both numbers)."""
    return int(np.random.SeedSequence([rng_seed, chunk]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def merge_shards(paths: list[str | Path], out: str | Path) -> int:
    """Merge shard tractograms (``.trk`` or ``.trx``, written by ``dwiml-track --seed-shard``) into
    ``out``, their streamlines ordered by seed; returns the number of streamlines."""
    shards = []
    for path in paths:
        if Path(path).suffix not in (".trk", ".trx"):
            raise DwimlError(f"{path}: a shard must be a .trk or .trx file (a .tck keeps no seed ids)")
        if not Path(path).is_file():
            raise DwimlError(f"{path}: no such file")
        sft = load_tractogram(str(path), "same", bbox_valid_check=False)
        if len(sft) and SEED_IDS not in sft.data_per_streamline:  # an empty file keeps no per-streamline keys
            raise DwimlError(f"{path}: no data_per_streamline '{SEED_IDS}': not written by dwiml-track")
        if shards and not is_header_compatible(shards[0], sft):
            raise DwimlError(f"{path}: another grid (affine, dimensions or voxel order) than {paths[0]}")
        shards.append(sft)
    if not shards:
        raise DwimlError("no shard to merge")
    filled = [sft for sft in shards if len(sft)] or shards[:1]
    merged = filled[0]
    for sft in filled[1:]:
        merged = merged + sft
    ids = np.asarray(merged.data_per_streamline.get(SEED_IDS, np.zeros(0))).reshape(-1)
    if len(np.unique(ids)) != len(ids):
        raise DwimlError(f"the shards share seeds (seed ids seen twice): {', '.join(map(str, paths))}")
    save_tractogram_atomic(merged[np.argsort(ids, kind="stable")], out)
    return len(merged)
