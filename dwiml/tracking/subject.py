"""What ``dwiml-track`` reads and writes: a trained model, one subject's volumes, a tractogram.

A subject comes from a dwiml HDF5 (volume groups; masks as groups or NIfTI files) or from
NIfTI files directly. All volumes of a subject share the input's grid.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from dipy.io.stateful_tractogram import StatefulTractogram
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dwiml.data.coords import ORIGIN, SPACE, voxel_sizes
from dwiml.data.dataset import MultiSubjectDataset
from dwiml.data.hdf5 import SUBSETS
from dwiml.data.neighborhood import Neighborhood
from dwiml.data.streamlines import compress
from dwiml.errors import DwimlError
from dwiml.models.io import load_model
from dwiml.tracking.output import save_tractogram_atomic
from dwiml.tracking.seeds import seeds_in_mask
from dwiml.tracking.tracker import Tracked, Tracker, TrackingOptions, volume_inputs

TRACKABLE_STEP = "dwiml.training.steps.OneInputStep"


@dataclass
class Subject:
    """One subject on one grid: the input volume ``(X, Y, Z, F)``, masks ``(X, Y, Z)``, affine."""

    name: str
    input: np.ndarray
    affine: np.ndarray
    seeding_mask: np.ndarray
    tracking_mask: np.ndarray | None

    @property
    def reference(self) -> nib.Nifti1Image:
        return nib.Nifti1Image(np.zeros(self.input.shape[:3], np.uint8), self.affine)

    @property
    def voxel_sizes(self) -> torch.Tensor:
        return torch.from_numpy(voxel_sizes(self.affine))


def load_tracking_model(folder: str | Path, device: str) -> tuple[nn.Module, DictConfig | None]:
    """A model from a run folder (``best_model/`` and ``.hydra/config.yaml``) or a model folder,
    with the run's config (None for a bare model folder)."""
    folder = Path(folder)
    config_path = folder / ".hydra" / "config.yaml"
    if not config_path.is_file():
        return load_model(folder, device), None
    config = OmegaConf.load(config_path)
    if OmegaConf.select(config, "step._target_") != TRACKABLE_STEP:
        raise DwimlError(f"{folder}: its step ({OmegaConf.select(config, 'step._target_')}) gives the model no "
                         "input volume: only models trained with step=one_input can track")
    return load_model(folder / "best_model", device), config


def subject_from_hdf5(hdf5_path: str | Path, name: str, input_group: str, seeding_mask: str,
                      tracking_mask: str | None) -> Subject:
    """A subject of a dwiml HDF5; each mask is a volume group of the subject or a NIfTI file."""
    dataset = MultiSubjectDataset(hdf5_path, lazy=True)
    for subset_name in SUBSETS:
        subset = dataset.subset(subset_name)
        if name in subset.subjects:
            index = subset.subjects.index(name)
            break
    else:
        raise DwimlError(f"{hdf5_path}: no subject '{name}'")
    volume, affine = subset.volume(index, input_group), subset.affine(index, input_group)

    def mask(source: str) -> np.ndarray:
        if subset.groups.get(source) == "volume":
            return subset.volume(index, source)[..., 0]
        if Path(source).suffix in (".nii", ".gz"):
            return _nifti_mask(source, volume.shape[:3], affine)
        raise DwimlError(f"{hdf5_path}: subject '{name}' has no volume group '{source}', and it is no NIfTI file")

    return Subject(name, volume, affine, mask(seeding_mask), None if tracking_mask is None else mask(tracking_mask))


def subject_from_files(input_path: str | Path, seeding_mask: str | Path, tracking_mask: str | Path | None) -> Subject:
    """A subject from NIfTI files: the model's input (4D, or 3D as one feature) and the masks."""
    image = _load_nifti(input_path)
    data = np.asarray(image.dataobj, dtype=np.float32)
    data = data[..., None] if data.ndim == 3 else data
    shape = data.shape[:3]
    return Subject(Path(input_path).name, data, image.affine, _nifti_mask(seeding_mask, shape, image.affine),
                   None if tracking_mask is None else _nifti_mask(tracking_mask, shape, image.affine))


@torch.no_grad()
def check_input_size(model: nn.Module, subject: Subject, features: torch.Tensor) -> None:
    """A clear error when the subject's input does not fit the model."""
    try:
        model.track_step(features, torch.zeros(1, 3, device=features.device),
                         model.initial_state(1, features.device))
    except RuntimeError as e:
        raise DwimlError(f"subject '{subject.name}': its input has {subject.input.shape[-1]} features, "
                         f"which the model does not accept ({str(e).splitlines()[0]})") from None


def save_tracked(tracked: Tracked, subject: Subject, out_path: str | Path) -> Path:
    """Save streamlines (voxel space) with ``seeds`` per streamline; the format follows the extension."""
    if Path(out_path).suffix not in (".trk", ".tck", ".trx"):
        raise DwimlError(f"{out_path}: the output must end in .trk, .tck or .trx")
    sft = StatefulTractogram([s.numpy() for s in tracked.as_list()], subject.reference, SPACE, origin=ORIGIN,
                             data_per_streamline={"seeds": tracked.seeds.numpy().astype(np.float32)})
    return save_tractogram_atomic(sft, out_path)


def _load_nifti(path: str | Path) -> nib.Nifti1Image:
    if not Path(path).is_file():
        raise DwimlError(f"{path}: no such file")
    try:
        return nib.load(str(path))
    except Exception as e:  # nibabel raises several types for unreadable files
        raise DwimlError(f"{path}: not a readable NIfTI file ({e})") from None


def _nifti_mask(path: str | Path, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    image = _load_nifti(path)
    data = np.asarray(image.dataobj)
    if data.shape[:3] != tuple(shape) or data.ndim > 3 and data.shape[3] != 1 or not np.allclose(
            image.affine, affine, atol=1e-4):
        raise DwimlError(f"{path}: mask shape {data.shape} or affine does not match the input's grid {tuple(shape)}")
    return data.reshape(shape).astype(np.float32)


def step_neighborhood(run_config: DictConfig | None) -> Neighborhood:
    """The neighbourhood the run's step gave the model (none for a bare model folder)."""
    if run_config is None:
        return Neighborhood()
    return Neighborhood(*(OmegaConf.select(run_config, f"step.neighborhood_{key}", default=default)
                          for key, default in (("type", "none"), ("radius_mm", None), ("nb_rings", 1))))


def track_subject(model: nn.Module, subject: Subject, options: TrackingOptions, seeds_per_voxel: int | None = None,
                  nb_seeds: int | None = None, compress_mm: float | None = None,
                  neighborhood: Neighborhood = Neighborhood()) -> Tracked:
    """Seeds in the subject's seeding mask (``options.rng_seed``), then tracking."""
    device = next(model.parameters()).device
    volume = torch.from_numpy(subject.input).to(device)
    seeds = seeds_in_mask(torch.from_numpy(subject.seeding_mask), seeds_per_voxel, nb_seeds, options.rng_seed)
    inputs = volume_inputs(volume, neighborhood.offsets_vox(subject.voxel_sizes).float())
    check_input_size(model, subject, inputs(seeds[:1].to(device)))
    mask = torch.ones(volume.shape[:3]) if subject.tracking_mask is None else torch.from_numpy(subject.tracking_mask)
    tracked = Tracker(model, inputs, mask, subject.voxel_sizes, options).track(seeds)
    if compress_mm is None:
        return tracked
    return Tracked(*compress(tracked.points, tracked.lengths, subject.voxel_sizes, compress_mm), tracked.seeds)
