"""Packed streamlines <-> torch's PackedSequence, by index arithmetic (no per-streamline loop)."""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from dwiml.data.streamlines import offsets


def packed_order(lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The time-major order of PackedSequence data, as indices into the packed points.

    Returns ``(index, batch_sizes, sorted_indices)``: ``data = x[index]`` is the
    PackedSequence data of ``x`` ``(N, F)``, and ``y[index] = out.data`` unpacks.
    """
    sorted_lengths, sorted_indices = torch.sort(lengths, descending=True)
    steps = torch.arange(int(sorted_lengths[0]), device=lengths.device)
    valid = steps[:, None] < sorted_lengths[None, :]
    index = (offsets(lengths)[sorted_indices][None, :] + steps[:, None])[valid]
    return index, valid.sum(dim=1).cpu(), sorted_indices


def pack(x: Tensor, lengths: Tensor) -> tuple[PackedSequence, Tensor]:
    """PackedSequence of packed rows ``x`` ``(N, F)``, and the index to unpack its outputs."""
    index, batch_sizes, sorted_indices = packed_order(lengths)
    unsorted = torch.empty_like(sorted_indices)
    unsorted[sorted_indices] = torch.arange(len(lengths), device=lengths.device)
    return PackedSequence(x[index], batch_sizes, sorted_indices, unsorted), index


def unpack(data: Tensor, index: Tensor) -> Tensor:
    """Packed rows ``(N, F)`` from PackedSequence data."""
    out = torch.empty_like(data)
    out[index] = data
    return out
