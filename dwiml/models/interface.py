"""The small interface a model implements, for training and for tracking.

Rows are packed points: all points of a batch of streamlines in one tensor, with ``lengths``.
A *tracking model* (built-in: Learn2Track, Transformer) is trained by ``step=one_input``:

- ``forward(inputs (N, F), lengths (B,), directions (N, 3)) -> outputs (N, ...)``: one output per
  point; ``directions[i]`` is the segment leaving point ``i``, so point ``i`` may only use the rows
  of ``directions`` before ``i`` of its own streamline (causality).
- ``compute_loss(outputs, target_dirs (N, 3), eos_targets (N,) bool | None) -> (mean loss, nb rows)``.
- ``initial_state(batch_size, device) -> state`` and
  ``track_step(inputs (B, F), last_dirs (B, 3), state) -> (outputs (B, ...), state)``: one point
  per streamline, equal to ``forward`` at that point. ``last_dirs`` is the segment that reached
  the current point (zeros at the first point). A state is a dict of tensors whose first
  dimension is the streamline, so :func:`select_streamlines` drops finished ones, and
  :func:`merge_streamlines` keeps the old state of some rows (a step's result discarded for them).
  Rows are independent: a row's outputs and new state depend on its own inputs and state only.
- ``head``: turns outputs into directions (``direction``, ``sample``, ``eos_probability``).

A *streamline model* (built-in: the streamline autoencoder) is trained by ``step=streamlines``:
``forward(points (N, 3), lengths (B,)) -> outputs`` and
``compute_loss(outputs, target_points (N, 3)) -> (mean loss, nb rows)``.
"""
from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn
from torch.nn import functional as F

State = dict[str, Tensor]


class TrackingModel(Protocol):
    head: nn.Module

    def __call__(self, inputs: Tensor, lengths: Tensor, directions: Tensor | None = None) -> Tensor: ...

    def compute_loss(self, outputs: Tensor, target_dirs: Tensor,
                     eos_targets: Tensor | None = None) -> tuple[Tensor, int]: ...

    def initial_state(self, batch_size: int, device: torch.device | str) -> State: ...

    def track_step(self, inputs: Tensor, last_dirs: Tensor, state: State) -> tuple[Tensor, State]: ...


class StreamlineModel(Protocol):
    def __call__(self, points: Tensor, lengths: Tensor) -> Tensor: ...

    def compute_loss(self, outputs: Tensor, target_points: Tensor) -> tuple[Tensor, int]: ...


def select_streamlines(state: State, keep: Tensor) -> State:
    """The state of the streamlines where ``keep`` (``(B,)`` bool or indices) selects."""
    return {key: value[keep] for key, value in state.items()}


def merge_streamlines(new: State, old: State, rows: Tensor) -> State:
    """``new`` at ``rows`` (``(B,)`` bool), ``old`` elsewhere. A tensor that grew along its later
    dimensions (a key/value cache) has ``old`` padded with zeros at their ends; a tensor updated
    in place (``new`` is ``old``) is kept as it is."""
    def merged(a: Tensor, b: Tensor) -> Tensor:
        if a is b:
            return a
        pad = [p for size, old_size in zip(reversed(a.shape), reversed(b.shape)) for p in (0, size - old_size)]
        return torch.where(rows.view(-1, *([1] * (a.dim() - 1))), a, F.pad(b, pad) if any(pad) else b)

    return {key: merged(new[key], value) for key, value in old.items()}


def head_loss(head: nn.Module, outputs: Tensor, target_dirs: Tensor,
              eos_targets: Tensor | None = None) -> tuple[Tensor, int]:
    """Mean of the head's per-row loss, and the number of rows."""
    return head.loss(outputs, target_dirs, eos_targets).mean(), len(target_dirs)
