"""The classical baselines: dipy's deterministic and probabilistic tracking on the CSD fODF.

The fODF is dipy's CSD (:mod:`dwiml.data.csd`, the recipe of the phantom's ``fodf`` group). From its SH
coefficients, ``det`` follows the fODF maximum nearest the previous direction
(``DeterministicMaximumDirectionGetter``) and ``prob`` samples the fODF
(``ProbabilisticDirectionGetter``), both within ``max_angle_deg``; ``LocalTracking`` with a
``BinaryStoppingCriterion`` on the tracking mask tracks one streamline per seed (dwiml voxel space),
both directions. Lengths are filtered in mm with dwiml's own rule
(:func:`dwiml.tracking.stopping.length_in_range`), so both trackers share seeds, masks and rules.
``csd_peaks`` gives the CSD peaks for peak-following tracking (EuDX) instead.
"""
from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from dipy.core.gradients import GradientTable, gradient_table
from dipy.data import default_sphere
from dipy.direction import DeterministicMaximumDirectionGetter, ProbabilisticDirectionGetter, peaks_from_model
from dipy.direction.peaks import PeaksAndMetrics
from dipy.io.gradients import read_bvals_bvecs
from dipy.io.stateful_tractogram import Space, StatefulTractogram
from dipy.tracking.local_tracking import LocalTracking
from dipy.tracking.streamline import Streamlines
from dipy.tracking.stopping_criterion import BinaryStoppingCriterion

from dwiml.data import csd
from dwiml.data.coords import mm_to_vox, to_dwiml_space, vox_to_mm, voxel_sizes
from dwiml.errors import DwimlError
from dwiml.tracking.output import save_tractogram_atomic
from dwiml.tracking.stopping import length_in_range

RANDOM_SEED = 1234  # of LocalTracking's probabilistic sampling


def csd_peaks(dwi: np.ndarray, gtab: GradientTable, mask: np.ndarray, sh_order_max: int = 8) -> PeaksAndMetrics:
    """Peaks of the CSD fODF inside ``mask`` (relative threshold 0.5, separated by >= 25 degrees)."""
    return peaks_from_model(csd.csd_model(dwi, gtab, sh_order_max), dwi, default_sphere, relative_peak_threshold=0.5,
                            min_separation_angle=25, mask=mask, legacy=False)


def fodf_direction_getter(sh: np.ndarray, algo: str, max_angle_deg: float):
    """dipy's ``det`` or ``prob`` direction getter on CSD SH coefficients (:mod:`dwiml.data.csd`'s basis)."""
    getters = {"det": DeterministicMaximumDirectionGetter, "prob": ProbabilisticDirectionGetter}
    if algo not in getters:
        raise DwimlError(f"dipy tracking algo must be 'det' or 'prob', got '{algo}'")
    return getters[algo].from_shcoeff(np.asarray(sh, dtype=np.float64), max_angle=max_angle_deg,
                                      sphere=default_sphere, basis_type=csd.SH_BASIS, legacy=csd.SH_LEGACY,
                                      relative_peak_threshold=0.5, min_separation_angle=25)


def track_dipy(direction_getter, tracking_mask: np.ndarray, seeds: np.ndarray, reference: nib.Nifti1Image,
               step_size_mm: float, max_angle_deg: float, min_length_mm: float,
               max_length_mm: float) -> StatefulTractogram:
    """Tracking from ``seeds`` ``(N, 3)`` (dwiml voxel space) on ``reference``'s grid with a dipy direction
    getter (CSD peaks or :func:`fodf_direction_getter`).

    Returns the streamlines whose length is in range, in dwiml's space, with their seed
    (voxel space) as ``data_per_streamline["seeds"]``.
    """
    affine = reference.affine
    if isinstance(direction_getter, PeaksAndMetrics):
        direction_getter.ang_thr = max_angle_deg
    tracker = LocalTracking(direction_getter, BinaryStoppingCriterion(tracking_mask > 0), vox_to_mm(seeds, affine),
                            affine, step_size=step_size_mm, max_cross=1,
                            maxlen=math.ceil(max_length_mm / step_size_mm) + 1, return_all=True, save_seeds=True,
                            random_seed=RANDOM_SEED)
    tracked = list(tracker)
    streamlines, seeds_mm = zip(*tracked) if tracked else ((), ())
    streamlines = Streamlines(streamlines)
    keep = length_in_range(torch.from_numpy(mm_to_vox(streamlines.get_data(), affine)),
                           torch.from_numpy(np.asarray(streamlines._lengths, dtype=np.int64)),
                           torch.from_numpy(voxel_sizes(affine)), min_length_mm, max_length_mm).numpy()
    seeds_vox = mm_to_vox(np.array(seeds_mm).reshape(-1, 3), affine)[keep].astype(np.float32)
    sft = StatefulTractogram(streamlines[keep], reference, Space.RASMM, data_per_streamline={"seeds": seeds_vox})
    return to_dwiml_space(sft)


def track_files(dwi_path: str | Path, bvals_path: str | Path, bvecs_path: str | Path,
                tracking_mask_path: str | Path, seeds: np.ndarray, out_path: str | Path, step_size_mm: float,
                max_angle_deg: float, min_length_mm: float, max_length_mm: float, algo: str = "det") -> Path:
    """Fit CSD on a DWI file, track from ``seeds`` (dwiml voxel space) with ``algo`` and save the tractogram."""
    dwi_img = nib.load(str(dwi_path))
    bvals, bvecs = read_bvals_bvecs(str(bvals_path), str(bvecs_path))
    mask = np.asarray(nib.load(str(tracking_mask_path)).dataobj) > 0
    sh = csd.fit_csd(np.asarray(dwi_img.dataobj, dtype=np.float32), gradient_table(bvals, bvecs=bvecs), mask)
    sft = track_dipy(fodf_direction_getter(sh, algo, max_angle_deg), mask, seeds, dwi_img, step_size_mm,
                     max_angle_deg, min_length_mm, max_length_mm)
    return save_tractogram_atomic(sft, out_path)
