"""Tracking-time filtering by the model's own end-of-streamline (EOS) output.

A streamline tracked by a model stops where a rule stops it (the mask, the angle, the length) or
where the model says it ends. A model trained with EOS targets (``step.add_eos_target=true``,
``model.head.eos_weight > 0``) has learned where true streamlines end: a tracked streamline whose
ends the model would not end there (a turn into the wrong bundle stopped by the angle rule, an
exit through the side of a bundle) is likely false. :func:`end_eos_probabilities` reads, for every
streamline, the model's EOS probability at each of its two ends, from the model's packed forward
pass over the streamline in each orientation (the state it has there is that of the whole
streamline so far); :func:`keep_ended` keeps the streamlines whose both ends exceed a threshold.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from dwiml.data.streamlines import offsets, reverse, select
from dwiml.errors import DwimlError
from dwiml.tracking.tracker import Inputs, Tracked
from dwiml.training.steps import segments


@torch.no_grad()
def end_eos_probabilities(model: nn.Module, inputs: Inputs, points: Tensor, lengths: Tensor,
                          batch_size: int = 10_000) -> Tensor:
    """``(B, 2)``: the EOS probability at the last point of each streamline (column 1) and at its
    first point when it is read backwards (column 0). ``points`` are packed, in voxel space."""
    if not getattr(model.head, "has_eos", False):
        raise DwimlError("end-of-streamline filtering: the model's head has no end-of-streamline output "
                         "(train it with model.head.eos_weight > 0 and step.add_eos_target=true)")
    model.eval()
    device = next(model.parameters()).device
    parts = []
    for chunk in torch.split(torch.arange(len(lengths)), batch_size):
        in_chunk = torch.zeros(len(lengths), dtype=torch.bool)
        in_chunk[chunk] = True
        chunk_points, chunk_lengths = (t.to(device) for t in select(points, lengths, in_chunk))
        last = offsets(chunk_lengths) + chunk_lengths - 1
        columns = []
        for flip in (True, False):
            oriented = reverse(chunk_points, chunk_lengths, torch.full_like(chunk_lengths, flip, dtype=torch.bool))
            outputs = model(inputs(oriented), chunk_lengths, segments(oriented, chunk_lengths))
            columns.append(model.head.eos_probability(outputs[last]))
        parts.append(torch.stack(columns, dim=1).cpu())
    return torch.cat(parts) if parts else torch.zeros(0, 2)


def keep_ended(model: nn.Module, inputs: Inputs, tracked: Tracked, min_probability: float,
               batch_size: int = 10_000) -> Tracked:
    """The streamlines whose two ends both have an EOS probability of at least ``min_probability``."""
    if not 0 < min_probability < 1:
        raise DwimlError(f"the minimal end-of-streamline probability is in (0, 1), got {min_probability}")
    keep = (end_eos_probabilities(model, inputs, tracked.points, tracked.lengths, batch_size) >=
            min_probability).all(dim=1)
    return Tracked(*select(tracked.points, tracked.lengths, keep), tracked.seeds[keep])
