"""A Transformer's attention weights on a subject's reference streamlines.

The streamlines are read and resampled as in training and the training step gives the model its
inputs (as :mod:`dwiml.evaluation.point_loss` does); the model records its attention weights
(:meth:`dwiml.models.transformer.Transformer.recording_attention`). For each attention (``encoder0.self``,
``decoder1.cross``, ...) and streamline, the weights are a ``(heads, n, n)`` matrix over the model's
points (every point with an EOS target, else all but the last): query ``i`` (row) sees keys
``0..i`` (columns). Per point, the attention a point receives is the mean, over the heads and the
queries that see it (itself and the points after it), of their weight on it; the last point gets
NaN when the model does not see it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib
import nibabel as nib
import numpy as np
import torch
from dipy.io.stateful_tractogram import StatefulTractogram
from torch import Tensor

from dwiml.atomic import atomic_path
from dwiml.data.coords import ORIGIN, SPACE
from dwiml.data.dataset import MultiSubjectDataset
from dwiml.data.input_spec import InputSpec
from dwiml.errors import DwimlError
from dwiml.evaluation.point_loss import reference_batches
from dwiml.tracking.output import save_tractogram_atomic

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402

TRK_MAX_KEYS = 10  # a .trk header names at most 10 values per point


@dataclass
class Attention:
    """Streamlines (voxel space) and, per attention, their weight matrices and received attention."""

    streamlines: list[np.ndarray]
    matrices: dict[str, list[np.ndarray]]
    received: dict[str, list[np.ndarray]]


@torch.no_grad()
def streamline_attention(model: torch.nn.Module, spec: InputSpec, dataset: MultiSubjectDataset, subject: str,
                         nb_streamlines: int, allow_mismatch: bool = False) -> Attention:
    """The attention of ``model`` on the subject's first ``nb_streamlines`` streamlines."""
    if not hasattr(model, "recording_attention"):
        raise DwimlError(f"the model is a {type(model).__name__}: only the Transformers have attention weights")
    step, batches = reference_batches(model, spec, dataset, subject, nb_streamlines, allow_mismatch, nb_streamlines)
    batches = list(batches)
    if not batches:
        raise DwimlError(f"{dataset.hdf5_path}: subject '{subject}' has no streamlines in '{spec.streamline_group}'")
    (batch,) = batches
    with model.recording_attention() as recorded:
        step.outputs_and_targets(model, batch)
    lengths = batch.lengths.to(step.device)
    seen = lengths if step.add_eos_target else lengths - 1
    streamlines = [p.numpy() for p in torch.split(batch.points, batch.lengths.tolist())]
    matrices, received = {}, {}
    for name, (weights,) in recorded.items():
        matrices[name] = [w[:, :n, :n].cpu().numpy() for w, n in zip(weights, seen.tolist())]
        received[name] = _received(weights, seen, lengths)
    return Attention(streamlines, matrices, received)


def _received(weights: Tensor, seen: Tensor, lengths: Tensor) -> list[np.ndarray]:
    """Per streamline ``(n,)``: the mean weight on each point over the heads and the queries
    ``i >= j`` among the ``seen`` points; NaN past them."""
    total = weights.shape[-1]
    keys = torch.arange(total, device=weights.device)
    queries = (keys[None, :, None] < seen[:, None, None]).to(weights.dtype)  # (B, queries, 1)
    sums = (weights.mean(dim=1) * queries).sum(dim=1)  # (B, keys)
    counts = (seen[:, None] - keys).clamp(min=1)
    values = torch.where(keys < seen[:, None], sums / counts, float("nan"))
    padded = torch.cat([values, values.new_full((len(values), 1), float("nan"))], dim=1)  # the unseen last point
    return [v[:n].cpu().numpy() for v, n in zip(padded, lengths.tolist())]


def save_attention_tractogram(attention: Attention, reference: nib.Nifti1Image, path: str | Path) -> Path:
    """The streamlines with the attention they receive per point, one ``data_per_point`` key per
    attention (``encoder0_self``, ...)."""
    if Path(path).suffix == ".trk" and len(attention.received) > TRK_MAX_KEYS:
        raise DwimlError(f"{path}: the model has {len(attention.received)} attentions, a .trk holds at most "
                         f"{TRK_MAX_KEYS} values per point: write a .trx")
    data = {name.replace(".", "_"): [v[:, None].astype(np.float32) for v in values]
            for name, values in attention.received.items()}
    sft = StatefulTractogram(attention.streamlines, reference, SPACE, origin=ORIGIN, data_per_point=data)
    return save_tractogram_atomic(sft, path)


def save_attention_images(attention: Attention, folder: str | Path) -> list[Path]:
    """One PNG per streamline, ``streamline_<k>.png``: a row per attention, a column per head."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    names = list(attention.matrices)
    for k in range(len(attention.streamlines)):
        nb_heads = attention.matrices[names[0]][k].shape[0]
        fig, axes = plt.subplots(len(names), nb_heads, figsize=(2.2 * nb_heads + 1, 2.2 * len(names) + 0.6),
                                 squeeze=False)
        for row, name in zip(axes, names):
            for head, ax in enumerate(row):
                image = ax.imshow(attention.matrices[name][k][head], cmap="viridis", vmin=0)
                ax.set_title(f"{name} head {head}", fontsize=8)
                ax.set_xlabel("key (point)", fontsize=7)
                ax.set_ylabel("query (point)", fontsize=7)
                fig.colorbar(image, ax=ax, fraction=0.046)
        fig.suptitle(f"streamline {k}: attention weights")
        fig.tight_layout()
        path = folder / f"streamline_{k}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=80, format="png")
        plt.close(fig)
        paths.append(path)
    return paths
