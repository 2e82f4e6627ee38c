"""The loss of a trained model at every point of a subject's reference streamlines.

The streamlines are read and resampled as in training (the model's input specification, no
augmentation) and the training step computes the model's outputs from the inputs of the
specification; the head's per-row loss is then kept per point. Points without a loss (the last
point of each streamline when the step adds no EOS target) get NaN.
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
from matplotlib import pyplot as plt  # noqa: E402


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
                      batch_size: int = 1000, allow_mismatch: bool = False,
                      nb_streamlines: int | None = None) -> tuple[OneInputStep, Iterator[Batch]]:
    """The training step giving ``model`` its inputs, and batches of the subject's streamlines (the first
    ``nb_streamlines``, all by default) resampled as in training.

    The subject's input group must match the model's (see :meth:`InputSpec.check_volume`)."""
    subset_name, index = find_subject(dataset, subject)
    subset = dataset.subset(subset_name)
    group = spec.streamline_group
    subset.check_group(spec.input_group, "volume")
    subset.check_group(group, "streamlines")
    spec.check_volume(VolumeDescription.from_attrs(subset.attrs[index, spec.input_group]),
                      f"{dataset.hdf5_path}, subject '{subject}', group '{spec.input_group}'", allow_mismatch)
    resampling = spec.loader_resampling(Resampling.from_attrs(subset.attrs[index, group]))
    loader = BatchLoader(subset, group, **asdict(resampling), augment=False)
    step = OneInputStep.from_spec(dataset, spec, device=str(next(model.parameters()).device))
    model.eval()
    total = len(subset.index[index, group].lengths)
    total = total if nb_streamlines is None else min(total, nb_streamlines)
    return step, (loader[BatchSpec((index,), (np.arange(start, min(start + batch_size, total)),), 0)]
                  for start in range(0, total, batch_size))


@torch.no_grad()
def point_losses(model: torch.nn.Module, spec: InputSpec, dataset: MultiSubjectDataset, subject: str,
                 batch_size: int = 1000, allow_mismatch: bool = False) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The subject's streamlines (resampled as in training, voxel space) and the loss at each of their points."""
    step, batches = reference_batches(model, spec, dataset, subject, batch_size, allow_mismatch)
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


def save_loss_tractogram(streamlines: list[np.ndarray], losses: list[np.ndarray], reference: nib.Nifti1Image,
                         path: str | Path) -> Path:
    """The streamlines with ``data_per_point["loss"]``."""
    sft = StatefulTractogram(streamlines, reference, SPACE, origin=ORIGIN,
                             data_per_point={"loss": [v[:, None].astype(np.float32) for v in losses]})
    return save_tractogram_atomic(sft, path)


def save_histogram(losses: list[np.ndarray], path: str | Path, title: str) -> Path:
    """A histogram PNG of the per-point losses (NaN left out)."""
    values = np.concatenate(losses)
    values = values[np.isfinite(values)]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(values, bins=50)
    ax.set(xlabel="loss per point", ylabel="points", title=f"{title} (mean {values.mean():.4g}, n={len(values)})")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return Path(path)
