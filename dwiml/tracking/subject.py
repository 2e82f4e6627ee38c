"""What ``dwiml-track`` reads and writes: a trained model, one subject's volumes, a tractogram.

A subject comes from a dwiml HDF5 (volume groups; masks as groups or NIfTI files) or from
NIfTI files directly. All volumes of a subject share the input's grid. The model's input
specification says which group, neighbourhood and step it takes, and the subject's input must
match it (:func:`check_subject`).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import nibabel as nib
import numpy as np
import torch
from dipy.io.stateful_tractogram import StatefulTractogram
from torch import nn

from dwiml.data.coords import ORIGIN, SPACE, voxel_sizes
from dwiml.data.dataset import MultiSubjectDataset
from dwiml.data.hdf5 import SUBSETS
from dwiml.data.input_spec import InputSpec, VolumeDescription, check_declaration
from dwiml.data.streamlines import compress
from dwiml.device import check_device
from dwiml.errors import DwimlError
from dwiml.models.io import SPEC, is_model_folder, load_model
from dwiml.ranges import AT_LEAST_ONE, POSITIVE, Range, check_all, check_order, option_name, rules_of
from dwiml.run_folder import RunFolder
from dwiml.tracking.output import check_tractogram_path, save_tractogram_atomic
from dwiml.tracking.seeds import seeds_in_mask
from dwiml.tracking.shards import SEED_IDS, Shard
from dwiml.tracking.tissues import TissueMaps, interface_mask
from dwiml.tracking.memory import MemoryPlan, auto_batch_size, bytes_per_streamline, plan
from dwiml.tracking.tracker import Inputs, Tracked, Tracker, TrackingOptions, volume_inputs

log = logging.getLogger(__name__)
# dwiml-track's numeric options (argparse destinations) beside those of TrackingOptions
TRACK_OPTIONS = {**rules_of(TrackingOptions), "batch_size": Range(1, words=("auto",)),
                 "seeds_per_voxel": AT_LEAST_ONE, "nb_seeds": AT_LEAST_ONE, "compress_mm": POSITIVE}


@dataclass
class Subject:
    """One subject on one grid: the input volume ``(X, Y, Z, F)`` and what it declares to hold, masks
    ``(X, Y, Z)``, affine, and tissue maps ``(X, Y, Z)`` by role (``include``, ``exclude``, ``wm``,
    ``gm``; see :mod:`dwiml.tracking.tissues`). No seeding mask: seeds at the ``wm``/``gm`` interface."""

    name: str
    input: np.ndarray
    affine: np.ndarray
    seeding_mask: np.ndarray | None
    tracking_mask: np.ndarray | None
    description: VolumeDescription
    maps: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def reference(self) -> nib.Nifti1Image:
        return nib.Nifti1Image(np.zeros(self.input.shape[:3], np.uint8), self.affine)

    @property
    def voxel_sizes(self) -> torch.Tensor:
        return torch.from_numpy(voxel_sizes(self.affine))


class TrackingModel(NamedTuple):
    """A model that takes an input volume, its input specification, and its run (None for a model folder)."""

    model: nn.Module
    spec: InputSpec
    run: RunFolder | None


def check_track_options(options: Mapping[str, Any]) -> None:
    """A one-line error naming the first of ``dwiml-track``'s options (by argparse destination) out of its
    rule, before any work."""
    check_all(options, TRACK_OPTIONS, option_name)
    check_order("--min-length-mm", options["min_length_mm"], "--max-length-mm", options["max_length_mm"])
    check_device(options["device"], "--device")
    check_tractogram_path(options["out"])


def load_tracking_model(folder: str | Path, device: str, use_latest_epoch: bool = False) -> TrackingModel:
    """A model from a model folder, or from a run folder: its ``best_model/``, or with
    ``use_latest_epoch`` the weights of its latest checkpoint. A model without an input
    specification (one that takes no input volume, e.g. ``step=streamlines``) is refused."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DwimlError(f"{folder}: no such folder (a run folder or a model folder)")
    run = None if is_model_folder(folder) else RunFolder(folder)
    if run is None and use_latest_epoch:
        raise DwimlError(f"{folder} is a model folder: the latest epoch's weights are in a run folder's checkpoint")
    model_folder = folder if run is None else run.checkpoint if use_latest_epoch else run.best_model
    if run is not None and not use_latest_epoch and not model_folder.is_dir() and run.checkpoint.is_dir():
        raise DwimlError(f"{folder} has no {model_folder.name}/ yet: --use-latest-epoch tracks its checkpoint")
    model, spec = load_model(model_folder, device)
    if spec is None:
        raise DwimlError(f"{model_folder} has no {SPEC}: the model takes no input volume (e.g. step=streamlines) "
                         "or was saved by an older dwiml, so it cannot track")
    return TrackingModel(model, spec, run)


def subject_from_hdf5(hdf5_path: str | Path, name: str, input_group: str, seeding_mask: str | None,
                      tracking_mask: str | None, maps: dict[str, str] | None = None) -> Subject:
    """A subject of a dwiml HDF5; each mask or map is a volume group of the subject or a NIfTI file."""
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

    return Subject(name, volume, affine, None if seeding_mask is None else mask(seeding_mask),
                   None if tracking_mask is None else mask(tracking_mask),
                   VolumeDescription.from_attrs(subset.attrs[index, input_group]),
                   {role: mask(source) for role, source in (maps or {}).items()})


def subject_from_files(input_path: str | Path, seeding_mask: str | Path | None, tracking_mask: str | Path | None,
                       sh_basis: str | None = None, sh_order: int | None = None,
                       maps: dict[str, str] | None = None) -> Subject:
    """A subject from NIfTI files: the model's input (4D, or 3D as one feature), what it holds when
    known (its SH basis and order), the masks and the tissue maps."""
    image = _load_nifti(input_path)
    data = np.asarray(image.dataobj, dtype=np.float32)
    data = data[..., None] if data.ndim == 3 else data
    shape = data.shape[:3]
    check_declaration({"sh_basis": sh_basis, "sh_order": sh_order}, str(input_path), data.shape[-1])
    def mask(path: str | Path | None) -> np.ndarray | None:
        return None if path is None else _nifti_mask(path, shape, image.affine)

    return Subject(Path(input_path).name, data, image.affine, mask(seeding_mask), mask(tracking_mask),
                   VolumeDescription(data.shape[-1], sh_basis, sh_order),
                   {role: mask(path) for role, path in (maps or {}).items()})


def check_subject(spec: InputSpec, subject: Subject, step_size_mm: float, allow_mismatch: bool = False) -> None:
    """A one-line error when the subject's input holds NaN/Inf, or it or the tracking step does not match
    what the model trained on: another feature count (always), another declared SH basis, order or channel
    names, or another step (unless ``allow_mismatch``). Voxel sizes the model never saw only give a warning."""
    where = f"subject '{subject.name}'"
    bad = int(np.count_nonzero(~np.isfinite(subject.input)))
    if bad:
        raise DwimlError(f"{where}: the input volume holds {bad} NaN/Inf values (of {subject.input.size}): "
                         "no direction can be predicted there; replace them (e.g. by 0) first")
    spec.check_volume(subject.description, where, allow_mismatch)
    step = spec.step_mismatch(step_size_mm)
    if step is not None and not allow_mismatch:
        raise DwimlError(f"{where}: {step} (--allow-mismatch to proceed)")
    sizes = tuple(round(float(v), 6) for v in voxel_sizes(subject.affine))
    if spec.voxel_sizes_mm and not any(np.allclose(sizes, trained, atol=1e-3) for trained in spec.voxel_sizes_mm):
        log.warning("%s: voxel sizes %s mm, the model trained on %s", where, list(sizes),
                    [list(v) for v in spec.voxel_sizes_mm])


def save_tracked(tracked: Tracked, subject: Subject, out_path: str | Path) -> Path:
    """Save streamlines (voxel space) with ``seeds`` and ``seed_ids`` per streamline; the format follows
    the extension."""
    check_tractogram_path(out_path)
    per_streamline = {"seeds": tracked.seeds.numpy().astype(np.float32)}
    if tracked.seed_ids is not None:
        per_streamline[SEED_IDS] = tracked.seed_ids.numpy()[:, None]
    sft = StatefulTractogram([s.numpy() for s in tracked.as_list()], subject.reference, SPACE, origin=ORIGIN,
                             data_per_streamline=per_streamline)
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


def tracking_inputs(model: nn.Module, spec: InputSpec, subject: Subject) -> tuple[Inputs, MemoryPlan]:
    """The model's inputs at points (its training neighbourhood), from the input volume on the model's
    device or, when too large for it, in host memory (:func:`dwiml.tracking.memory.plan`)."""
    memory = plan(subject.input.nbytes, next(model.parameters()).device)
    volume = torch.from_numpy(subject.input).to(memory.volume_device)
    offsets = spec.neighborhood.offsets_vox(subject.voxel_sizes).float()
    return volume_inputs(volume, offsets, memory.block_points), memory


def auto_batch_size_for(model: nn.Module, spec: InputSpec, subject: Subject, options: TrackingOptions) -> int:
    """``--batch-size auto``: the streamlines that half the device's free memory holds (see
    :mod:`dwiml.tracking.memory`), probed at the centre of the volume."""
    inputs, memory = tracking_inputs(model, spec, subject)
    centre = (torch.tensor(subject.input.shape[:3], dtype=torch.float32) - 1) / 2
    per_streamline = bytes_per_streamline(model, inputs, centre.expand(2, 3), options.max_nb_points)
    return auto_batch_size(per_streamline, memory.free_bytes)


def track_subject(model: nn.Module, spec: InputSpec, subject: Subject, options: TrackingOptions,
                  seeds_per_voxel: int | None = None, nb_seeds: int | None = None, compress_mm: float | None = None,
                  allow_mismatch: bool = False, progress: bool = False, tissue_rule: str | None = None,
                  shard: Shard = Shard()) -> Tracked:
    """Seeds in the subject's seeding mask, or at its WM/GM interface (``options.rng_seed``), then
    tracking with the inputs of the model's training (its neighbourhood), after :func:`check_subject`;
    ``tissue_rule`` (``act`` or ``cmc``): stopping from the subject's include and exclude maps;
    ``shard``: its share of the seeds only (:mod:`dwiml.tracking.shards`); ``progress``: a progress bar."""
    check_subject(spec, subject, options.step_size_mm, allow_mismatch)
    inputs, _ = tracking_inputs(model, spec, subject)
    seeding = subject.seeding_mask if subject.seeding_mask is not None else interface_mask(subject.maps["wm"],
                                                                                           subject.maps["gm"])
    if not np.any(subject.input[seeding > 0]):
        log.warning("subject '%s': the input volume is zero in every seeding voxel", subject.name)
    seeds = seeds_in_mask(torch.from_numpy(seeding), seeds_per_voxel, nb_seeds, options.rng_seed)
    mask = torch.ones(subject.input.shape[:3]) if subject.tracking_mask is None else torch.from_numpy(subject.tracking_mask)
    tissues = None if tissue_rule is None else TissueMaps(
        torch.from_numpy(subject.maps["include"]), torch.from_numpy(subject.maps["exclude"]), tissue_rule,
        options.step_size_mm / float(subject.voxel_sizes.mean()))
    tracked = Tracker(model, inputs, mask, subject.voxel_sizes, options, tissues).track(seeds, progress, shard)
    if compress_mm is None:
        return tracked
    return Tracked(*compress(tracked.points, tracked.lengths, subject.voxel_sizes, compress_mm), tracked.seeds,
                   tracked.seed_ids)
