"""Packed streamlines <-> the layouts of torch's RNNs, by index arithmetic (no per-streamline loop).

Two layouts give the same outputs at every point (tested): torch's ``PackedSequence``, and
zero-padded time-major sequences ``(T, B, F)``, which an RNN runs faster (on the CPU, the
backward of a PackedSequence zero-fills a whole-batch gradient at each time step) at the cost
of computing the padding. :func:`prefer_padded` picks the padded one when the padding costs
at most ``PADDING_LIMIT`` times the points.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from dwiml.data.streamlines import offsets, point_local_ids, point_streamline_ids

PADDING_LIMIT = 3.0  # padded steps (T x B) per point beyond which PackedSequence is used


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


def prefer_padded(lengths: Tensor) -> bool:
    """True when zero-padded sequences cost at most ``PADDING_LIMIT`` times the points."""
    return int(lengths.max()) * len(lengths) <= PADDING_LIMIT * int(lengths.sum())


def pad(x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Zero-padded time-major ``(T, B, F)`` sequences of packed rows ``x`` ``(N, F)``, and
    ``index`` ``(N,)``: the row of each point in the ``(T * B, F)`` view (see :func:`unpad`)."""
    total, batch = int(lengths.max()), len(lengths)
    index = point_local_ids(lengths) * batch + point_streamline_ids(lengths)
    padded = x.new_zeros(total * batch, x.shape[1])
    padded[index] = x
    return padded.view(total, batch, -1), index


def unpad(padded: Tensor, index: Tensor) -> Tensor:
    """Packed rows ``(N, F)`` of time-major ``(T, B, F)`` sequences."""
    return padded.reshape(-1, padded.shape[-1]).index_select(0, index)
