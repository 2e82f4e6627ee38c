"""A memory bound for tracking: where the input volume lives, and a batch size from free memory.

The rule (:func:`plan`), with ``free`` the device's free memory (``torch.cuda.mem_get_info`` on
CUDA; on the CPU, the available memory from ``psutil``):

- the input volume goes to the device when it takes at most ``VOLUME_SHARE`` (1/2) of ``free``;
  otherwise it stays in host memory and every step interpolates it there, ``BLOCK_POINTS`` points
  at a time, and only the features (``(B, K * F)``) move to the device. On the CPU it stays put;
- ``--batch-size auto`` (:func:`auto_batch_size`): as many streamlines as ``BATCH_SHARE`` (1/2) of
  the memory left (``free``, less the volume when it moved there) holds, at
  :func:`bytes_per_streamline` each, between 1 and ``MAX_BATCH``.

``bytes_per_streamline`` measures the model's state per streamline after the maximum number of
steps (two probe streamlines through ``track_step``: a Transformer's key/value cache grows with
the streamline), counts it twice (dropping finished streamlines copies the state), and adds the
points of both halves and their joined copies (4 x points x 12 bytes) and 4 copies of a step's inputs.
"""
from __future__ import annotations

from dataclasses import dataclass

import psutil
import torch
from torch import nn

from dwiml.tracking.tracker import Inputs

VOLUME_SHARE = 0.5
BATCH_SHARE = 0.5
BLOCK_POINTS = 1 << 16
MAX_BATCH = 100_000


@dataclass(frozen=True)
class MemoryPlan:
    """Where the input volume goes (``volume_device``) and how many points each interpolation takes
    (None: all at once)."""

    volume_device: torch.device
    block_points: int | None
    free_bytes: int


def free_bytes(device: torch.device) -> int:
    """Free memory of ``device``: ``torch.cuda.mem_get_info`` on CUDA, psutil's available memory else."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return int(psutil.virtual_memory().available)


def plan(volume_bytes: int, device: torch.device, free: int | None = None) -> MemoryPlan:
    """The volume on ``device`` if it takes at most ``VOLUME_SHARE`` of the free memory (``free``, or
    measured), else on the host, interpolated by blocks of ``BLOCK_POINTS`` points."""
    free = free_bytes(device) if free is None else free
    if device.type == "cpu" or volume_bytes <= VOLUME_SHARE * free:
        return MemoryPlan(device, None, free - (0 if device.type == "cpu" else volume_bytes))
    return MemoryPlan(torch.device("cpu"), BLOCK_POINTS, free)


@torch.no_grad()
def bytes_per_streamline(model: nn.Module, inputs: Inputs, points: torch.Tensor, max_nb_points: int) -> int:
    """Device memory for one streamline of a batch; ``points`` ``(2, 3)``: where the probes step
    (any points of the volume)."""
    device = next(model.parameters()).device
    points = points.to(device)
    state = model.initial_state(len(points), device)
    dirs = torch.zeros_like(points)
    features = inputs(points)
    for _ in range(max_nb_points):
        _, state = model.track_step(features, dirs, state)
    state_bytes = sum(t.numel() * t.element_size() for t in state.values()) / len(points)
    input_bytes = features[0].numel() * features.element_size()
    return int(2 * state_bytes + 4 * max_nb_points * 3 * 4 + 4 * input_bytes)


def auto_batch_size(per_streamline: int, free: int) -> int:
    """Streamlines in ``BATCH_SHARE`` of ``free`` bytes, between 1 and ``MAX_BATCH``."""
    return max(1, min(MAX_BATCH, int(BATCH_SHARE * free) // max(per_streamline, 1)))
