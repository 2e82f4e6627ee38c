"""The loss of a trained model at every point of a subject's reference streamlines.

The streamlines are read and resampled as in training (the model's input specification, no
augmentation) and the training step computes the model's outputs from the inputs of the
specification; the head's per-row loss is then kept per point. Points without a loss (the last
point of each streamline when the step adds no EOS target) get NaN. The streamlines may also come
from any tractogram file on the subject's grid. For viewing: an RGB colour per point from a
colormap, the best and worst streamlines by mean loss, and a histogram on a log axis.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import matplotlib
import nibabel as nib
import numpy as np
import torch
from dipy.io.stateful_tractogram import StatefulTractogram
from dipy.io.streamline import load_tractogram

from dwiml.atomic import atomic_path
from dwiml.data.coords import ORIGIN, SPACE
from dwiml.data.dataset import MultiSubjectDataset
from dwiml.data.hdf5 import SUBSETS
from dwiml.data.input_spec import InputSpec, Resampling, VolumeDescription
from dwiml.data.loader import Batch, BatchLoader
from dwiml.data.sampler import BatchSpec
from dwiml.errors import DwimlError
from dwiml.tracking.output import save_tractogram_atomic
from dwiml.training.steps import OneInputStep

matplotlib.use("Agg")
from matplotlib import colormaps, pyplot as plt  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402


def find_subject(dataset: MultiSubjectDataset, name: str) -> tuple[str, int]:
    """The subset and index of subject ``name``."""
    for subset in SUBSETS:
        if name in dataset.subset(subset).subjects:
            return subset, dataset.subset(subset).subjects.index(name)
    raise DwimlError(f"{dataset.hdf5_path}: no subject '{name}'")


def subject_reference(dataset: MultiSubjectDataset, subject: str, group: str) -> nib.Nifti1Image:
    """An empty image on the grid of the subject's volume group ``group`` (a tractogram's reference)."""
    subset_name, index = find_subject(dataset, subject)
    subset = dataset.subset(subset_name)
    return nib.Nifti1Image(np.zeros(subset.volume(index, group).shape[:3], np.uint8), subset.affine(index, group))


def reference_batches(model: torch.nn.Module, spec: InputSpec, dataset: MultiSubjectDataset, subject: str,
                      batch_size: int = 1000, allow_mismatch: bool = False, nb_streamlines: int | None = None,
                      streamlines: list[np.ndarray] | None = None) -> tuple[OneInputStep, Iterator[Batch]]:
    """The training step giving ``model`` its inputs, and batches of the subject's streamlines (the first
    ``nb_streamlines``, all by default) resampled as in training: those of the model's streamline group,
    or ``streamlines`` (voxel space, e.g. from a tractogram file: see :func:`load_streamlines`).

    The subject's input group must match the model's (see :meth:`InputSpec.check_volume`)."""
    subset_name, index = find_subject(dataset, subject)
    subset = dataset.subset(subset_name)
    subset.check_group(spec.input_group, "volume")
    spec.check_volume(VolumeDescription.from_attrs(subset.attrs[index, spec.input_group]),
                      f"{dataset.hdf5_path}, subject '{subject}', group '{spec.input_group}'", allow_mismatch)
    step = OneInputStep.from_spec(dataset, spec, device=str(next(model.parameters()).device))
    model.eval()
    if streamlines is not None:
        loader = BatchLoader(subset, spec.streamline_group, **asdict(spec.loader_resampling(Resampling())),
                             augment=False)
        return step, _given_batches(loader, subset.voxel_sizes(index, spec.input_group), subset_name, index,
                                    streamlines[:nb_streamlines], batch_size)
    group = spec.streamline_group
    subset.check_group(group, "streamlines")
    resampling = spec.loader_resampling(Resampling.from_attrs(subset.attrs[index, group]))
    loader = BatchLoader(subset, group, **asdict(resampling), augment=False)
    total = len(subset.index[index, group].lengths)
    total = total if nb_streamlines is None else min(total, nb_streamlines)
    return step, (loader[BatchSpec((index,), (np.arange(start, min(start + batch_size, total)),), 0)]
                  for start in range(0, total, batch_size))


def _given_batches(loader: BatchLoader, voxel_sizes: np.ndarray, subset: str, index: int,
                   streamlines: list[np.ndarray], batch_size: int) -> Iterator[Batch]:
    """Batches of ``streamlines`` of subject ``index``, resampled by ``loader``'s rule (if it has one)."""
    for start in range(0, len(streamlines), batch_size):
        chunk = streamlines[start:start + batch_size]
        points = torch.from_numpy(np.concatenate(chunk).astype(np.float64))
        lengths = torch.tensor([len(s) for s in chunk])
        if loader.resampling.as_dict():
            sizes = torch.from_numpy(np.asarray(voxel_sizes, np.float64)).expand(len(points), 3)
            points, lengths = loader.resample(points, lengths, sizes)
        points = points.float()
        yield Batch(points, points, lengths, torch.full((len(lengths),), index), subset)


def load_streamlines(path: str | Path, reference: nib.Nifti1Image) -> list[np.ndarray]:
    """A tractogram file's streamlines (.trk, .tck, .trx, read by dipy) in voxel space, on the grid of
    ``reference`` (the subject's); an error when its header is on another grid."""
    try:
        sft = load_tractogram(str(path), reference, bbox_valid_check=False)
    except Exception as e:  # dipy and nibabel raise several types for unreadable files
        raise DwimlError(f"{path}: not a readable tractogram ({e})") from None
    if sft is False:  # dipy's answer to a header on another grid (it logs the differences)
        raise DwimlError(f"{path}: not a tractogram on the subject's grid (its header differs)")
    sft.to_space(SPACE)
    sft.to_origin(ORIGIN)
    return list(sft.streamlines)


@torch.no_grad()
def point_losses(model: torch.nn.Module, spec: InputSpec, dataset: MultiSubjectDataset, subject: str,
                 batch_size: int = 1000, allow_mismatch: bool = False,
                 streamlines: list[np.ndarray] | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The subject's streamlines (its reference ones, or ``streamlines``; resampled as in training, voxel
    space) and the loss at each of their points."""
    step, batches = reference_batches(model, spec, dataset, subject, batch_size, allow_mismatch,
                                      streamlines=streamlines)
    streamlines, losses = [], []
    for batch in batches:
        outputs, target_dirs, eos_targets, rows = step.outputs_and_targets(model, batch)
        rows_loss = model.head.loss(outputs, target_dirs, *(() if eos_targets is None else (eos_targets,)))
        loss = torch.full((len(rows),), float("nan"), device=rows.device)
        loss[rows] = rows_loss.float()
        split = batch.lengths.tolist()
        streamlines += [p.numpy() for p in torch.split(batch.points, split)]
        losses += [v.cpu().numpy() for v in torch.split(loss, split)]
    return streamlines, losses


def loss_colors(losses: list[np.ndarray], colormap: str = "viridis",
                value_range: tuple[float, float] | None = None) -> tuple[list[np.ndarray], tuple[float, float]]:
    """RGB colours (0-255) of every point from ``colormap`` (a matplotlib name) over ``value_range`` (default:
    the 5th to 95th percentiles of the losses; clipped outside it), grey where a point has no loss; and the range."""
    if colormap not in colormaps:
        raise DwimlError(f"--colormap {colormap}: not a matplotlib colormap (e.g. viridis, plasma, turbo, coolwarm)")
    values = np.concatenate(losses)
    low, high = value_range or tuple(float(v) for v in np.nanpercentile(values, [5, 95]))
    if not low < high and value_range is not None:
        raise DwimlError(f"--range {low} {high}: the low end must be below the high end")
    cmap = colormaps[colormap].with_extremes(bad="grey")
    rgb = cmap(Normalize(low, high, clip=True)(np.ma.masked_invalid(values)))[:, :3] * 255
    return np.split(rgb.astype(np.float32), np.cumsum([len(v) for v in losses])[:-1]), (low, high)


def best_and_worst(losses: list[np.ndarray], percent: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``percent`` % of streamlines (at least one) with the lowest and with the highest mean
    loss over their points, best first and worst first; streamlines without any loss are in neither."""
    values = np.concatenate(losses)
    finite = np.isfinite(values)
    starts = np.cumsum([0] + [len(v) for v in losses[:-1]])
    counts = np.add.reduceat(finite, starts)
    means = np.add.reduceat(np.where(finite, values, 0.0), starts) / np.maximum(counts, 1)
    scored = np.flatnonzero(counts > 0)
    order = scored[np.argsort(means[scored], kind="stable")]
    k = max(1, round(len(order) * percent / 100))
    return order[:k], order[::-1][:k]


def save_loss_tractogram(streamlines: list[np.ndarray], losses: list[np.ndarray], colors: list[np.ndarray],
                         reference: nib.Nifti1Image, path: str | Path) -> Path:
    """The streamlines with ``data_per_point["loss"]`` and ``data_per_point["color"]`` (RGB, 0-255, the
    key trackvis-style viewers colour by)."""
    sft = StatefulTractogram(streamlines, reference, SPACE, origin=ORIGIN,
                             data_per_point={"loss": [v[:, None].astype(np.float32) for v in losses],
                                             "color": colors})
    return save_tractogram_atomic(sft, path)


PERCENTILES = (5, 25, 50, 75, 95)


def save_histogram(losses: list[np.ndarray], path: str | Path, title: str) -> Path:
    """A histogram PNG of the per-point losses (NaN left out) with their percentiles marked: on a log
    axis of losses with log-spaced bins when none is negative (points at exactly 0 counted in the title),
    else (a log-likelihood loss) with log counts."""
    values = np.concatenate(losses)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        raise DwimlError(f"{title}: no point has a loss")
    positive = values[values > 0]
    log_axis = values.min() >= 0 and len(positive) > 1 and positive.max() > positive.min()
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    if log_axis:
        ax.hist(positive, bins=np.geomspace(positive.min(), positive.max(), 60), color="0.6")
        ax.set_xscale("log")
    else:
        ax.hist(values, bins=60, color="0.6", log=True)
    marks = colormaps["plasma"](np.linspace(0, 0.85, len(PERCENTILES)))
    for q, value, color in zip(PERCENTILES, np.percentile(values, PERCENTILES), marks):
        drawn = max(value, positive.min()) if log_axis else value  # a percentile at 0 drawn at the axis' start
        ax.axvline(drawn, color=color, linestyle="--", linewidth=1.2, label=f"{q}th percentile: {value:.3g}")
    ax.legend(fontsize="small", framealpha=0.9)
    zeros = f", {len(values) - len(positive)} at 0 (not drawn)" if log_axis and len(positive) < len(values) else ""
    ax.set(xlabel="loss per point" + (" (log scale)" if log_axis else ""),
           ylabel="points" + ("" if log_axis else " (log scale)"),
           title=f"{title}: loss at {len(values)} points{zeros}\nmean {values.mean():.4g}, "
                 f"median {np.median(values):.4g}")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return Path(path)
