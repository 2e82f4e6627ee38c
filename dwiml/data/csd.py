"""The fODF of a single-shell DWI: dipy's constrained spherical deconvolution (CSD), one recipe for all.

The response comes from ``auto_response_ssst`` (single shell, single tissue; the voxels of FA above
0.7 within 10 voxels of the volume's centre), the fit is computed inside a mask only. The phantom's
``fodf`` group and the dipy baselines (:mod:`dwiml.tracking.baseline`) both use it, so a model trained
on the fODF and dipy's tracking see the same orientation distributions.
"""
from __future__ import annotations

import numpy as np
from dipy.core.gradients import GradientTable
from dipy.reconst.csdeconv import ConstrainedSphericalDeconvModel, auto_response_ssst

SH_ORDER = 8
SH_BASIS = "descoteaux07"
SH_LEGACY = True  # dipy's CSD coefficients are in the legacy descoteaux07 basis


def csd_model(dwi: np.ndarray, gtab: GradientTable, sh_order_max: int = SH_ORDER) -> ConstrainedSphericalDeconvModel:
    """The CSD model of ``dwi`` with its response estimated from the data."""
    response, _ = auto_response_ssst(gtab, dwi, roi_radii=10, fa_thr=0.7)
    return ConstrainedSphericalDeconvModel(gtab, response, sh_order_max=sh_order_max)


def fit_csd(dwi: np.ndarray, gtab: GradientTable, mask: np.ndarray, sh_order_max: int = SH_ORDER) -> np.ndarray:
    """CSD fODF SH coefficients ``(X, Y, Z, C)`` (float32), zero outside ``mask``."""
    return np.asarray(csd_model(dwi, gtab, sh_order_max).fit(dwi, mask=mask > 0).shm_coeff, dtype=np.float32)
