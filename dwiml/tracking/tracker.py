"""Tracking with a trained model: all active streamlines advance together, one model call per step.

Seeds are processed in chunks of ``batch_size`` streamlines on the model's device. In a chunk,
every step interpolates the inputs at the current points of the active streamlines, calls
``model.track_step`` once for all of them, moves each by ``step_size_mm`` along its direction
(the direction is in voxel space; the step is converted per axis with the voxel sizes) and applies
the stopping rules of :mod:`dwiml.tracking.stopping` to all rows at once. Streamlines that stop
leave the batch (their rows of the state are dropped with ``select_streamlines``).

A streamline stops, at a step, when

- the model's end-of-streamline output ends it (``eos_threshold``: a probability, or ``"max"``; see
  :mod:`dwiml.tracking.eos`); the new point is not added;
- the angle between its previous and new segments exceeds ``max_angle_deg``, or the new point
  would make it longer than ``max_length_mm`` (the new point is not added);
- the new point leaves the tracking mask: this point, outside the mask, is added when
  ``keep_last_point`` is true and it lies inside the volume (so the tractogram's bounding box stays valid);
- with tissue maps (:mod:`dwiml.tracking.tissues`, ACT or CMC), the new point reaches the include map
  (the point is added) or the exclude map. Then only streamlines whose every end reached the include
  map are kept.

Both directions (``bidirectional``): the first half is tracked from the seed. The model's state is
then rebuilt on that half reversed: the points from its far end back to (not including) the seed
are fed to ``track_step`` (each with the segment that reached it), so that at the seed the model
has seen the streamline so far exactly as it will be stored. The halves of a chunk are aligned on
their last point (the seed): shorter halves start later, and a row's state is only updated once
its half has started (:func:`~dwiml.models.interface.merge_streamlines`), which needs a model whose
state rows advance independently (Learn2Track; the Transformer keeps a position per row). The
second half then starts at the seed with the segment that reached it (``seed - p1``; for a first
half with no second point, the opposite of the first direction tried), the length budget left,
and the same rules: the angle rule at the seed forbids folding back onto the first half.

Continuing given streamlines (``continue_streamlines``, the generation-validation phase): the
model's state is built on each prefix of ``k`` points (all prefixes have the same length, so every
row starts together, for any model), then tracking goes on forward from the prefix's last point.

Streamlines whose length is outside ``[min_length_mm, max_length_mm]`` are dropped at the end.
Compression (:func:`dwiml.data.streamlines.compress`) is an optional export step on the final streamlines.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from tqdm import tqdm

from dwiml.config.schema import ALGOS
from dwiml.data import neighborhood
from dwiml.data.interpolation import inside_mask
from dwiml.data.streamlines import point_local_ids, point_streamline_ids, select
from dwiml.errors import DwimlError
from dwiml.models.interface import State, merge_streamlines, select_streamlines
from dwiml.ranges import (ANGLE_DEG, AT_LEAST_ONE, EOS_THRESHOLD, NON_NEGATIVE, POSITIVE, Choice, check_all, check_order,
                          ruled, rules_of)
from dwiml.tracking.eos import check_head, eos_stops
from dwiml.tracking.shards import Shard, chunk_rng_seed
from dwiml.tracking.stopping import Stop, in_length_range, stop_reasons
from dwiml.tracking.tissues import TissueMaps, tissue_stops

Inputs = Callable[[Tensor], Tensor]


@dataclass
class TrackingOptions:
    """How to track; lengths in mm, angles in degrees."""

    algo: Literal["det", "prob"] = ruled(Choice(ALGOS), "det")
    step_size_mm: float = ruled(POSITIVE, 1.0)
    max_angle_deg: float = ruled(ANGLE_DEG, 30.0)
    min_length_mm: float = ruled(NON_NEGATIVE, 10.0)
    max_length_mm: float = ruled(POSITIVE, 200.0)
    eos_threshold: float | str | None = ruled(EOS_THRESHOLD, None)  # a probability, or "max" (see dwiml.tracking.eos)
    bidirectional: bool = True
    keep_last_point: bool = False
    batch_size: int = ruled(AT_LEAST_ONE, 10_000)
    rng_seed: int = 1234
    mask_interpolation: Literal["nearest", "trilinear"] = ruled(Choice(("nearest", "trilinear")), "nearest")

    def __post_init__(self) -> None:
        check_all(vars(self), rules_of(TrackingOptions))
        check_order("min_length_mm", self.min_length_mm, "max_length_mm", self.max_length_mm)

    @property
    def max_nb_points(self) -> int:
        return math.floor(self.max_length_mm / self.step_size_mm + 1e-6) + 1


@dataclass
class Tracked:
    """Packed streamlines (dwiml voxel space) with the seed of each streamline and, from
    :meth:`Tracker.track`, its index among the seeds."""

    points: Tensor
    lengths: Tensor
    seeds: Tensor
    seed_ids: Tensor | None = None

    def as_list(self) -> list:
        """One ``(n, 3)`` CPU tensor per streamline."""
        return list(torch.split(self.points.cpu(), self.lengths.tolist()))


def volume_inputs(volume: Tensor, offsets_vox: Tensor | None = None, block_points: int | None = None) -> Inputs:
    """The model's inputs at points, as the training step builds them: the input volume
    interpolated at each point and its neighbours (``offsets_vox`` ``(K, 3)``, see
    :mod:`dwiml.data.neighborhood`; the point alone by default).

    The interpolation runs where ``volume`` is (e.g. a volume kept in host memory for a model on a
    GPU, see :mod:`dwiml.tracking.memory`), ``block_points`` points at a time (all at once by
    default), and the inputs come back on the points' device."""
    offsets_vox = torch.zeros(1, 3) if offsets_vox is None else offsets_vox

    def inputs(points: Tensor) -> Tensor:
        local = points.to(volume.device)
        blocks = [local] if block_points is None else local.split(block_points)
        return torch.cat([neighborhood.interpolate(volume, b, offsets_vox) for b in blocks]).to(points.device)

    return inputs


class Tracker:
    """Tracks a model on one subject: its input volume, tracking mask and voxel sizes."""

    def __init__(self, model: nn.Module, inputs: Inputs, tracking_mask: Tensor, voxel_sizes: Tensor,
                 options: TrackingOptions, tissues: TissueMaps | None = None):
        self.model, self.inputs, self.options = model.eval(), inputs, options
        self.device = next(model.parameters()).device
        self.mask = tracking_mask.to(self.device)
        self.tissues = None if tissues is None else tissues.to(self.device)
        self.voxel_sizes = voxel_sizes.to(self.device, torch.float32)
        self.generator = torch.Generator(self.device).manual_seed(options.rng_seed)
        if options.algo == "prob" and not hasattr(model.head, "sample"):
            raise DwimlError(f"probabilistic tracking: the head {type(model.head).__name__} cannot sample directions")
        check_head(model.head, options.eos_threshold)

    @torch.no_grad()
    def track(self, seeds: Tensor, progress: bool = False, shard: Shard = Shard()) -> Tracked:
        """Streamlines from ``seeds`` ``(N, 3)`` (voxel space), those of a valid length only.

        Chunk ``k`` of ``batch_size`` seeds draws from its own generator (see
        :mod:`dwiml.tracking.shards`); ``shard`` tracks only its share of the chunks. ``progress``:
        a progress bar on the terminal (seeds done, streamlines kept; none when the standard error
        is not a terminal).
        """
        seeds = seeds.detach().cpu().float()
        size = self.options.batch_size
        span = shard.seed_range(len(seeds), size)
        parts, kept, nb_kept = [], [], 0
        with tqdm(total=len(span), desc="tracking", unit="seed", disable=None if progress else True) as bar:
            for start in range(span.start, span.stop, size):
                chunk_ids = torch.arange(start, min(start + size, span.stop))
                self.generator.manual_seed(chunk_rng_seed(self.options.rng_seed, start // size))
                points, lengths, accepted = self._track_chunk(seeds[chunk_ids].to(self.device))
                keep = accepted & self._valid_length(lengths)
                parts.append(select(points, lengths, keep))
                kept.append(chunk_ids[keep])
                nb_kept += len(kept[-1])
                bar.update(len(chunk_ids))
                bar.set_postfix(kept=nb_kept)
        kept_ids = torch.cat(kept) if kept else torch.zeros(0, dtype=torch.long)
        return Tracked(*_concat(parts), seeds[kept_ids], kept_ids)

    def _valid_length(self, lengths: Tensor) -> Tensor:
        """Every segment is one step: lengths from float32 points would put those of exactly
        max_length_mm a rounding error above it."""
        return in_length_range((lengths - 1).double() * self.options.step_size_mm, self.options.min_length_mm,
                               self.options.max_length_mm)

    @torch.no_grad()
    def continue_streamlines(self, prefixes: Tensor) -> Tracked:
        """Each prefix ``prefixes[:, b]`` (``(k, B, 3)``, voxel space, ``k >= 1`` points about
        ``step_size_mm`` apart) continued forward; every streamline is kept (no length filter) and
        starts with its prefix. ``seeds`` are the prefixes' first points."""
        prefixes = prefixes.detach().float()
        parts = []
        for chunk in torch.split(prefixes, self.options.batch_size, dim=1):
            chunk = chunk.to(self.device)
            k, batch = chunk.shape[:2]
            nb = torch.full((batch,), k, dtype=torch.long, device=self.device)
            state, last_dirs = self._replay(chunk, nb, torch.zeros_like(chunk[0]))
            prefix_mm = torch.full((batch,), (k - 1) * self.options.step_size_mm, dtype=torch.float64,
                                   device=self.device)
            grown, nb_grown, _, _ = self._grow(chunk[-1], last_dirs, state, prefix_mm)
            points, lengths = _join(chunk, nb, grown, nb_grown)
            parts.append((points.cpu(), lengths.cpu()))
        return Tracked(*_concat(parts), prefixes[0].cpu())

    def _track_chunk(self, seeds: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Packed points and lengths (on the CPU) of the streamlines of one chunk of seeds, and
        whether each ended where the rules accept it (with tissue maps: every end in the include map)."""
        batch = len(seeds)
        zeros = torch.zeros_like(seeds)
        state = self.model.initial_state(batch, self.device)
        no_length = torch.zeros(batch, dtype=torch.float64, device=self.device)  # float64: no drift past max_length_mm
        first, nb_first, tried, why_first = self._grow(seeds, zeros, state, no_length)
        if not self.options.bidirectional:
            return _pack(first, nb_first).cpu(), nb_first.cpu(), self._accepted(why_first).cpu()
        # Reverse the first half (far end first, the seed last) and rebuild the state on it.
        reversed_half = _reverse_padded(first, nb_first)  # (T, B, 3), right-aligned: seed at row T - 1
        state, last_dirs = self._replay(reversed_half, nb_first, tried)
        lengths_mm = (nb_first - 1).double() * self.options.step_size_mm
        second, nb_second, _, why_second = self._grow(seeds, last_dirs, state, lengths_mm)
        points, lengths = _join(reversed_half, nb_first, second, nb_second)
        return points.cpu(), lengths.cpu(), (self._accepted(why_first) & self._accepted(why_second)).cpu()

    def _accepted(self, why: Tensor) -> Tensor:
        """Ends the rules accept: any, or with tissue maps those in the include map."""
        return why == Stop.INCLUDED if self.tissues is not None else torch.ones_like(why, dtype=torch.bool)

    def _replay(self, reversed_half: Tensor, nb: Tensor, tried: Tensor) -> tuple[State, Tensor]:
        """The state after the points before the seed, and the segments reaching the seeds."""
        total, batch = reversed_half.shape[:2]
        state = self.model.initial_state(batch, self.device)
        previous = torch.zeros(batch, 3, device=self.device)
        all_started = total - int(nb.min())  # from this row on, every half has started: no merge
        for t in range(total - int(nb.max()), total - 1):
            current = reversed_half[t]
            last_dirs = torch.where((t > total - nb)[:, None], current - previous, 0.0)
            _, new_state = self.model.track_step(self.inputs(current), last_dirs, state)
            state = new_state if t >= all_started else merge_streamlines(new_state, state, t >= total - nb)
            previous = current
        last_dirs = torch.where((nb > 1)[:, None], reversed_half[-1] - previous, -tried)
        return state, last_dirs

    def _grow(self, start: Tensor, last_dirs: Tensor, state: State,
              lengths_mm: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Track from ``start`` until every streamline stops.

        Returns the points ``(T, B, 3)`` (row ``t`` of streamline ``b`` valid for ``t < nb[b]``),
        ``nb`` ``(B,)``, the first direction tried from each start ``(B, 3)`` and why each stopped
        (:class:`Stop` codes ``(B,)``).
        """
        o = self.options
        batch = len(start)
        path = start.new_zeros(o.max_nb_points, batch, 3)
        path[0] = start
        nb = torch.ones(batch, dtype=torch.long, device=self.device)
        why = torch.full((batch,), int(Stop.MAX_LENGTH), dtype=torch.long, device=self.device)
        tried = torch.zeros_like(start)
        active = torch.arange(batch, device=self.device)
        points, previous = start, last_dirs
        for t in range(1, o.max_nb_points):
            if len(active) == 0:
                break
            outputs, state = self.model.track_step(self.inputs(points), previous, state)
            dirs = self._directions(outputs)
            step = dirs * (o.step_size_mm / (dirs * self.voxel_sizes).norm(dim=1, keepdim=True))
            if t == 1:
                tried[active] = step
            new_points = points + step
            new_lengths = lengths_mm + o.step_size_mm
            reasons = stop_reasons(self.mask, new_points, previous * self.voxel_sizes, step * self.voxel_sizes,
                                   new_lengths, o.max_angle_deg, o.max_length_mm, o.mask_interpolation)
            if self.tissues is not None:
                reasons = tissue_stops(self.tissues.status(new_points, self.generator), reasons)
            if o.eos_threshold is not None:
                reasons = torch.where(self._eos(outputs), int(Stop.EOS), reasons)
            going = reasons == Stop.CONTINUE
            if bool(going.all()):  # the usual step: every row goes on, nothing to select or record
                if len(active) == batch:  # no row stopped yet: active is every row, in order
                    path[t] = new_points
                    nb += 1
                else:
                    path[t, active] = new_points
                    nb[active] += 1
                points, previous, lengths_mm = new_points, step, new_lengths
                continue
            last = o.keep_last_point & (reasons == Stop.LEFT_MASK) & inside_mask(new_points, self.mask.shape)
            added = going | last | (reasons == Stop.INCLUDED)
            path[t, active[added]] = new_points[added]
            nb[active[added]] += 1
            why[active[~going]] = reasons[~going]
            active, points, previous, lengths_mm = active[going], new_points[going], step[going], new_lengths[going]
            state = select_streamlines(state, going)  # copies the state (a Transformer's whole cache)
        return path[:int(nb.max())], nb, tried, why  # no rows past the longest streamline

    def _directions(self, outputs: Tensor) -> Tensor:
        head = self.model.head
        return head.sample(outputs, self.generator) if self.options.algo == "prob" else head.direction(outputs)

    def _eos(self, outputs: Tensor) -> Tensor:
        return eos_stops(self.model.head, outputs, self.options.eos_threshold)


def _concat(parts: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """The packed points and lengths of chunks, one after the other."""
    if not parts:
        return torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)
    return torch.cat([p for p, _ in parts]), torch.cat([n for _, n in parts])


def _pack(path: Tensor, nb: Tensor) -> Tensor:
    """Packed points ``(sum nb, 3)`` of padded ``path`` ``(T, B, 3)``."""
    return path[point_local_ids(nb), point_streamline_ids(nb)]


def _reverse_padded(path: Tensor, nb: Tensor) -> Tensor:
    """Each streamline reversed and right-aligned: its last row is its first point (the rows before
    its start hold that point too)."""
    valid = torch.arange(len(path), device=path.device)[:, None] >= len(path) - nb
    return torch.where(valid[..., None], path.flip(0), path[0])


def _join(reversed_half: Tensor, nb_first: Tensor, second: Tensor, nb_second: Tensor) -> tuple[Tensor, Tensor]:
    """Packed full streamlines: the reversed first half, then the second half without its seed."""
    total = len(reversed_half)
    lengths = nb_first + nb_second - 1
    streamline = point_streamline_ids(lengths)
    local = point_local_ids(lengths)
    in_first = local < nb_first[streamline]
    row = torch.where(in_first, total - nb_first[streamline] + local, local - nb_first[streamline] + 1)
    points = torch.where(in_first[:, None], reversed_half[row.clamp(max=total - 1), streamline],
                         second[row.clamp(max=len(second) - 1), streamline])
    return points, lengths
