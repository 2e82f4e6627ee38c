"""The generation-validation phase: the model tracks on from the start of validation streamlines,
and is judged by where the streamlines it generates end.

Every ``every_n_epochs`` epochs the trainer calls :class:`GenerationValidation` with the model it
validates, whose inputs (volume group, neighbourhood) come from its input specification. For each
validation subject, a fixed random choice of at most ``max_streamlines_per_subject`` streamlines of
``streamline_group`` (the same every epoch), resampled to ``step_size_mm`` (default: the step the model
trained with), is continued by :meth:`dwiml.tracking.tracker.Tracker.continue_streamlines`:
the model's state is built on each streamline's first ``nb_init_points`` points, then it tracks
forward with the rules of :mod:`dwiml.tracking` (``tracking_mask``: a volume group of the subject,
or the whole volume; ``max_angle_deg``, ``max_length_mm``, ``eos_threshold``, ``algo``).

The subjects tracked are those of ``subsets``: the validation subjects by default; with
``subsets=[training, validation]`` the training subjects too, so the gap between the subjects the
model learns from and unseen ones shows memorization as it happens. A validation metric is named
``gv_<metric>``, the same metric on another subset ``gv_<subset>_<metric>`` (e.g. ``gv_training_valid_pct``).

Metrics (over all subjects of a subset; each subject weighs its number of streamlines):

- ``gv_final_distance_mm``: mean distance between the generated and the true final points;
- ``gv_reached_end``: share of generated streamlines whose final point lies within
  ``end_radius_mm`` of the true final point;
- ``gv_connectivity_fp_rate``, when the streamline group has a connectivity reference (see
  :mod:`dwiml.data.connectivity`): share of generated streamlines joining two regions that the
  reference never connects (lower is better);
- when that reference is a label volume (the phantom's endpoint regions): the Tractometer scores
  of :mod:`dwiml.evaluation.scoring` (``gv_valid_pct``, ``gv_invalid_pct``, ``gv_no_connection_pct``,
  ``gv_mean_overlap``, ``gv_mean_overreach``, ``gv_mean_f1``) against a ground truth of all the
  subject's streamlines of the group, one bundle per pair of regions they connect (computed when
  there are at most ``max_scored_bundles`` such pairs: each bundle holds a voxel map in memory);
- label regions are grown by ``endpoint_tolerance_mm`` for both (streamlines tracked to the edge of
  a tracking mask may end just past them);
- ``gv_seconds``: the time the phase took (all subsets).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor, nn

from dwiml.config.schema import GenerationValidationConfig
from dwiml.data.connectivity import ConnectivityReference
from dwiml.data.dataset import MultiSubjectDataset, SubjectSet
from dwiml.data.input_spec import InputSpec
from dwiml.data.streamlines import offsets, resample_step
from dwiml.errors import DwimlError
from dwiml.evaluation.scoring import (GroundTruth, Packed, dilate_labels, endpoint_regions, ground_truth_by_regions,
                                     score)
from dwiml.ranges import check_all, rules_of
from dwiml.tracking.tracker import Tracked, Tracker, TrackingOptions, volume_inputs

GV_SUBSETS = ("training", "validation")
DISTANCE_METRICS = ("gv_final_distance_mm", "gv_reached_end")
CONNECTIVITY_METRICS = ("gv_connectivity_fp_rate",)
log = logging.getLogger(__name__)
SCORES = ("valid_pct", "invalid_pct", "no_connection_pct", "mean_overlap", "mean_overreach", "mean_f1")


@dataclass
class _Subject:
    """What one subject's phase needs, prepared once."""

    subset: SubjectSet
    index: int
    prefix: str  # of its metric names: gv_ (validation) or gv_<subset>_
    prefixes: Tensor  # (k, B, 3) the first points of the chosen streamlines
    true_final: np.ndarray  # (B, 3) their last points
    linear: np.ndarray  # (3, 3) voxel -> mm (the affine without its translation)
    connectivity: ConnectivityReference | None
    truth: GroundTruth | None


class GenerationValidation:
    """Tracks on from the first points of validation streamlines; ``__call__(model)`` gives the metrics."""

    def __init__(self, dataset: MultiSubjectDataset, spec: InputSpec, device: str = "cpu",
                 subsets: Sequence[str] = ("validation",), every_n_epochs: int = 1,
                 streamline_group: str = "streamlines", step_size_mm: float | None = None, nb_init_points: int = 2,
                 max_streamlines_per_subject: int | None = 500, tracking_mask: str | None = None,
                 algo: str = "det", max_angle_deg: float = 90.0, max_length_mm: float = 300.0,
                 eos_threshold: float | str | None = None, end_radius_mm: float = 2.0,
                 endpoint_tolerance_mm: float = 0.0, max_scored_bundles: int = 20, batch_size: int = 10_000,
                 seed: int = 1234):
        check_all(dict(every_n_epochs=every_n_epochs, step_size_mm=step_size_mm, nb_init_points=nb_init_points,
                       max_streamlines_per_subject=max_streamlines_per_subject, algo=algo, max_angle_deg=max_angle_deg,
                       max_length_mm=max_length_mm, eos_threshold=eos_threshold, end_radius_mm=end_radius_mm,
                       endpoint_tolerance_mm=endpoint_tolerance_mm, max_scored_bundles=max_scored_bundles,
                       batch_size=batch_size, seed=seed), rules_of(GenerationValidationConfig), "gv.".__add__)
        if step_size_mm is None:
            step_size_mm = spec.trained_resampling.step_size_mm
        if step_size_mm is None:
            raise DwimlError(f"gv.step_size_mm is null and the model trained on streamlines with "
                             f"{spec.trained_resampling}: give the step size (mm) the model tracks with")
        if not subsets or not set(subsets) <= set(GV_SUBSETS) or len(set(subsets)) < len(subsets):
            raise DwimlError(f"gv.subsets: distinct names among {list(GV_SUBSETS)} (never the testing subjects), "
                             f"got {list(subsets)}")
        for name in subsets:
            if len(dataset.subset(name)) == 0:
                raise DwimlError(f"gv: {dataset.hdf5_path} has no {name} subjects to track")
        self.every_n_epochs, self.input_group, self.neighborhood = every_n_epochs, spec.input_group, spec.neighborhood
        self.tracking_mask, self.end_radius_mm, self.max_scored_bundles = tracking_mask, end_radius_mm, max_scored_bundles
        self.device = torch.device(device)
        self.options = TrackingOptions(algo=algo, step_size_mm=step_size_mm, max_angle_deg=max_angle_deg,
                                       min_length_mm=0.0, max_length_mm=max_length_mm, eos_threshold=eos_threshold,
                                       bidirectional=False, batch_size=batch_size, rng_seed=seed)
        self.subjects = [self._prepare(dataset.subset(name), i, _prefix(name), streamline_group, nb_init_points,
                                       max_streamlines_per_subject, endpoint_tolerance_mm,
                                       np.random.default_rng([seed, GV_SUBSETS.index(name), i]))
                         for name in subsets for i in range(len(dataset.subset(name)))]
        names = DISTANCE_METRICS
        if all(s.connectivity is not None for s in self.subjects):
            names += CONNECTIVITY_METRICS
        if all(s.truth is not None for s in self.subjects):
            names += tuple(f"gv_{name}" for name in SCORES)
        self.columns = tuple(_prefix(subset) + name[3:] for subset in subsets for name in names) + ("gv_seconds",)

    def due(self, epoch: int) -> bool:
        """Whether the phase runs at the end of ``epoch`` (counted from 1)."""
        return epoch % self.every_n_epochs == 0

    def _prepare(self, subset: SubjectSet, index: int, prefix: str, group: str, k: int, max_streamlines: int | None,
                 tolerance_mm: float, rng: np.random.Generator) -> _Subject:
        for name, kind in ((self.input_group, "volume"), (self.tracking_mask, "volume"), (group, "streamlines")):
            if name is not None:
                subset.check_group(name, kind)
        nb = len(subset.index[index, group].lengths)
        ids = np.sort(rng.permutation(nb)[:max_streamlines]) if max_streamlines is not None else np.arange(nb)
        ids = ids[subset.index[index, group].lengths[ids] > 1]  # resampling needs two points
        voxel_sizes = torch.from_numpy(subset.voxel_sizes(index, group))
        points, lengths = subset.streamlines(index, group, ids)
        points, lengths = resample_step(torch.from_numpy(points).double(), torch.from_numpy(lengths), voxel_sizes,
                                        self.options.step_size_mm)
        keep = lengths > k  # a true continuation exists beyond the prefix
        starts, lengths = offsets(lengths)[keep], lengths[keep]
        prefixes = points[starts[None, :] + torch.arange(k)[:, None]].float()
        true_final = points[starts + lengths - 1].numpy()
        connectivity = subset.connectivity(index, group)
        truth = None
        if connectivity is not None and connectivity.labels is not None:
            labels = dilate_labels(connectivity.labels.astype(np.int64), subset.affine(index, group), tolerance_mm)
            connectivity = replace(connectivity, labels=labels)
            points, lengths = subset.streamlines(index, group, np.arange(nb))
            everything = Packed(points.astype(np.float64), lengths)
            pairs = endpoint_regions(everything, labels)
            nb_bundles = len(np.unique(pairs[(pairs > 0).all(axis=1)], axis=0))
            if nb_bundles <= self.max_scored_bundles:
                truth = ground_truth_by_regions(everything, labels)
            else:
                log.info("gv: subject %s connects %d region pairs (> gv.max_scored_bundles=%d): "
                         "no Tractometer scores", subset.subjects[index], nb_bundles, self.max_scored_bundles)
        return _Subject(subset, index, prefix, prefixes, true_final, subset.affine(index, group)[:3, :3], connectivity, truth)

    def __call__(self, model: nn.Module) -> dict[str, float]:
        """The metrics of ``model`` (left in eval mode)."""
        start = time.perf_counter()
        return {**self.metrics(self.track(model)), "gv_seconds": time.perf_counter() - start}

    def track(self, model: nn.Module) -> list[Tracked]:
        """The chosen streamlines of each subject, continued by ``model``."""
        return [self._track_subject(model, subject) for subject in self.subjects]

    def metrics(self, tracked: list[Tracked]) -> dict[str, float]:
        """The metrics (all but ``gv_seconds``) of the streamlines of :meth:`track`."""
        results: dict[str, list[tuple[dict[str, float], int]]] = {}
        for subject, t in zip(self.subjects, tracked):
            results.setdefault(subject.prefix, [])
            if len(t.lengths):
                results[subject.prefix].append((self._subject_metrics(subject, t), len(t.lengths)))
        metrics = dict.fromkeys(self.columns[:-1], float("nan"))
        for pairs in results.values():
            if pairs:
                for name in pairs[0][0]:
                    metrics[name] = float(np.average([r[name] for r, _ in pairs], weights=[w for _, w in pairs]))
        return metrics

    def _track_subject(self, model: nn.Module, subject: _Subject) -> Tracked:
        subset, i = subject.subset, subject.index
        volume = torch.from_numpy(subset.volume(i, self.input_group)).to(self.device)
        voxel_sizes = torch.from_numpy(subset.voxel_sizes(i, self.input_group))
        inputs = volume_inputs(volume, self.neighborhood.offsets_vox(voxel_sizes).float().to(self.device))
        mask = (torch.from_numpy(subset.volume(i, self.tracking_mask)[..., 0]) if self.tracking_mask is not None
                else torch.ones(volume.shape[:3]))
        return Tracker(model, inputs, mask, voxel_sizes, self.options).continue_streamlines(subject.prefixes)

    def _subject_metrics(self, subject: _Subject, tracked: Tracked) -> dict[str, float]:
        candidate = Packed(tracked.points.double().numpy(), tracked.lengths.numpy())
        first, final = candidate.points[candidate.offsets], candidate.points[candidate.offsets + candidate.lengths - 1]
        distance = np.linalg.norm((final - subject.true_final) @ subject.linear.T, axis=1)
        p = subject.prefix
        metrics = {f"{p}final_distance_mm": float(distance.mean()),
                   f"{p}reached_end": float((distance <= self.end_radius_mm).mean())}
        if subject.connectivity is not None:
            metrics[f"{p}connectivity_fp_rate"] = subject.connectivity.false_positive_rate(first, final)
        if subject.truth is not None:
            scores = score(candidate, subject.truth)
            metrics.update({f"{p}{name}": float(scores[name]) for name in SCORES})
        return metrics


def _prefix(subset: str) -> str:
    """Of a subset's metric names: ``gv_`` for the validation subjects, ``gv_<subset>_`` otherwise."""
    return "gv_" if subset == "validation" else f"gv_{subset}_"
