"""Synthetic diffusion MRI phantom: curved bundles, a crossing, multi-tensor DWI.

Each subject has three tube-shaped bundles drawn as Bezier centrelines in voxel
space: two gentle arcs crossing at ~90 degrees (``lr_arc``, ``ap_arc``) and a
U-shaped bundle in a slab above them (``u_fiber``). Every voxel inside a tube
gets the local fiber direction; the DWI is a multi-tensor signal (equal
fractions of the fibers present, isotropic background elsewhere) with Rician
noise, on the real 64-direction b=1000 gradient table shipped with dipy. The
model input is the SH fit (order 6, dipy ``descoteaux07`` basis with
``legacy=False``) of the b0-normalized signal.

Streamlines are in voxel space with voxel centres at integer coordinates
(dipy ``Space.VOX``, ``Origin.NIFTI``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from math import comb
from pathlib import Path

import nibabel as nib
import numpy as np
from dipy.core.gradients import GradientTable, gradient_table
from dipy.core.sphere import HemiSphere
from dipy.data import get_fnames
from dipy.io.gradients import read_bvals_bvecs
from dipy.io.stateful_tractogram import Origin, Space, StatefulTractogram
from dipy.io.streamline import save_tractogram
from dipy.reconst.shm import sf_to_sh
from dipy.sims.voxel import add_noise
from scipy.ndimage import binary_dilation
from scipy.spatial import cKDTree

from dwiml.atomic import atomic_folder

PHANTOM_VERSION = 2  # 2: the streamline group holds a connectivity reference
SHAPE = (24, 24, 12)
VOXEL_SIZE_MM = 2.0
S0 = 100.0
SNR = 30.0
FIBER_EVALS = (1.7e-3, 0.3e-3, 0.3e-3)
BACKGROUND_DIFFUSIVITY = 0.9e-3  # isotropic, grey-matter-like (mm^2/s)
SH_ORDER = 6
SH_BASIS = "descoteaux07"
SH_LEGACY = False
SH_SMOOTH = 0.006
TUBE_RADIUS = 2.0  # voxels
STEP = 0.375  # voxels between centreline points (0.75 mm)
NB_STREAMLINES = 80
END_JITTER_MM = 2.0  # maximal trim of each streamline end
ENDPOINT_MM = 4.0  # length of the head / tail regions
MAX_ROTATION_DEG = 5.0
MAX_SHIFT = (0.75, 0.75, 0.25)  # voxels
CONTROL_POINT_JITTER = 0.5  # voxels, in-plane
# wm_mask reaches one voxel past the bundles, so streamlines tracked to its border end one voxel
# past the endpoint regions: score tracked tractograms with regions grown by this distance.
SCORING_TOLERANCE_MM = VOXEL_SIZE_MM

GROUPS_CONFIG = f"""\
input:
  type: volume
  files: [sh.nii.gz]
  standardization: none
  sh_basis: {SH_BASIS}{"_legacy" if SH_LEGACY else ""}
  sh_order: {SH_ORDER}
wm_mask:
  type: volume
  files: [wm_mask.nii.gz]
streamlines:
  type: streamlines
  files: [bundles/*.trk]
  connectivity_matrix: connectivity.npy
  connectivity_labels: endpoints_labels.nii.gz
"""


@dataclass(frozen=True)
class BundleDesign:
    """A bundle template: name and Bezier control points (voxel coordinates)."""

    name: str
    control_points: tuple[tuple[float, float, float], ...]


BUNDLE_DESIGNS = (
    BundleDesign("lr_arc", ((2.5, 9.0, 3.0), (11.5, 14.0, 3.0), (20.5, 9.0, 3.0))),
    BundleDesign("ap_arc", ((9.0, 2.5, 3.0), (14.0, 11.5, 3.0), (9.0, 20.5, 3.0))),
    BundleDesign(
        "u_fiber",
        ((3.0, 18.0, 8.0), (3.0, 2.5, 8.0), (20.0, 2.5, 8.0), (20.0, 18.0, 8.0)),
    ),
)


@dataclass
class Bundle:
    """One subject's bundle: centreline, its unit tangents, and streamlines."""

    name: str
    centreline: np.ndarray  # (M, 3)
    tangents: np.ndarray  # (M, 3)
    streamlines: list[np.ndarray]
    heads: np.ndarray  # (S, K, 3) first ENDPOINT_MM of each streamline
    tails: np.ndarray  # (S, K, 3) last ENDPOINT_MM of each streamline


def phantom_affine() -> np.ndarray:
    """RAS affine, 2 mm isotropic voxels, field of view roughly centred on the origin."""
    affine = np.diag([VOXEL_SIZE_MM] * 3 + [1.0])
    affine[:3, 3] = -np.array(SHAPE) * VOXEL_SIZE_MM / 2
    return affine


def phantom_gtab() -> GradientTable:
    """dipy's shipped ``small_64D`` gradient table (one b0, 64 directions at b~1000)."""
    _, fbval, fbvec = get_fnames(name="small_64D")
    bvals, bvecs = read_bvals_bvecs(str(fbval), str(fbvec))
    return gradient_table(bvals, bvecs=np.nan_to_num(bvecs))


def bezier(control_points: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Points (len(t), 3) of the Bezier curve with the given control points."""
    n = len(control_points) - 1
    bernstein = np.stack([comb(n, k) * t**k * (1 - t) ** (n - k) for k in range(n + 1)], axis=1)
    return bernstein @ control_points


def resample_by_arclength(points: np.ndarray, step: float) -> np.ndarray:
    """Resample a dense polyline to points ``step`` apart along its arc length."""
    arclength = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    targets = np.arange(0.0, arclength[-1], step)
    return np.stack([np.interp(targets, arclength, points[:, d]) for d in range(3)], axis=1)


def unit(vectors: np.ndarray) -> np.ndarray:
    """Normalize vectors along the last axis."""
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def perturb_control_points(control_points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotate (about z), shift and jitter control points, then clip them so the tube fits.

    A Bezier curve lies in the convex hull of its control points, so clipping them
    to ``TUBE_RADIUS`` from the border keeps every streamline inside the volume.
    """
    angle = np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    centre = control_points.mean(axis=0)
    points = (control_points - centre) @ rotation.T + centre
    points += rng.uniform(-1, 1, 3) * MAX_SHIFT
    points[:, :2] += rng.uniform(-CONTROL_POINT_JITTER, CONTROL_POINT_JITTER, (len(points), 2))
    return np.clip(points, TUBE_RADIUS, np.array(SHAPE) - 1 - TUBE_RADIUS)


def make_bundle(design: BundleDesign, rng: np.random.Generator) -> Bundle:
    """Streamlines of one bundle: the centreline shifted inside the tube, ends trimmed."""
    control_points = perturb_control_points(np.array(design.control_points), rng)
    centreline = resample_by_arclength(bezier(control_points, np.linspace(0, 1, 2000)), STEP)
    tangents = unit(np.gradient(centreline, axis=0))
    normals = unit(np.cross([0.0, 0.0, 1.0], tangents))
    binormals = np.cross(tangents, normals)

    radius = TUBE_RADIUS * np.sqrt(rng.uniform(0, 1, NB_STREAMLINES))
    phase = rng.uniform(0, 2 * np.pi, NB_STREAMLINES)
    in_plane = (radius * np.cos(phase))[:, None, None]
    out_of_plane = (radius * np.sin(phase))[:, None, None]
    lines = centreline + in_plane * normals + out_of_plane * binormals  # (S, M, 3)

    step_mm = STEP * VOXEL_SIZE_MM
    max_trim = int(END_JITTER_MM / step_mm)
    nb_end = int(round(ENDPOINT_MM / step_mm)) + 1
    starts = rng.integers(0, max_trim + 1, NB_STREAMLINES)
    stops = len(centreline) - rng.integers(0, max_trim + 1, NB_STREAMLINES)
    rows = np.arange(NB_STREAMLINES)[:, None]
    return Bundle(
        name=design.name,
        centreline=centreline,
        tangents=tangents,
        streamlines=[line[start:stop] for line, start, stop in zip(lines, starts, stops)],
        heads=lines[rows, starts[:, None] + np.arange(nb_end)],
        tails=lines[rows, stops[:, None] - 1 - np.arange(nb_end)],
    )


def fiber_orientations(bundles: list[Bundle]) -> tuple[np.ndarray, np.ndarray]:
    """Per-bundle fiber field: directions (B, X, Y, Z, 3) and presence (B, X, Y, Z).

    A voxel holds bundle b's fiber when its centre is within ``TUBE_RADIUS`` of the
    centreline (ends excluded); the direction is the tangent at the nearest point.
    """
    centres = np.indices(SHAPE).reshape(3, -1).T.astype(float)
    directions = np.zeros((len(bundles), *SHAPE, 3))
    present = np.zeros((len(bundles), *SHAPE), dtype=bool)
    for b, bundle in enumerate(bundles):
        distance, nearest = cKDTree(bundle.centreline).query(
            centres, distance_upper_bound=TUBE_RADIUS
        )
        inside = (distance <= TUBE_RADIUS) & (nearest > 0) & (nearest < len(bundle.centreline) - 1)
        present[b] = inside.reshape(SHAPE)
        directions[b][present[b]] = bundle.tangents[nearest[inside]]
    return directions, present


def multi_tensor_signal(gtab: GradientTable, directions: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Noise-free multi-tensor DWI (X, Y, Z, N), vectorized over voxels.

    S = S0 * sum_k f_k exp(-b g^T D_k g) with axially symmetric D_k along fiber k
    and equal fractions f_k; voxels without fiber get an isotropic tensor.
    Same values as ``dipy.sims.voxel.multi_tensor`` voxel by voxel.
    """
    bvals, bvecs = gtab.bvals, gtab.bvecs
    lambda_par, lambda_perp = FIBER_EVALS[0], FIBER_EVALS[1]
    cos2 = np.einsum("b...c,nc->b...n", directions, bvecs) ** 2
    gtdg = lambda_perp * (bvecs**2).sum(axis=1) + (lambda_par - lambda_perp) * cos2
    attenuations = np.exp(-bvals * gtdg) * present[..., None]
    nb_fibers = present.sum(axis=0)[..., None]
    fibers = attenuations.sum(axis=0) / np.maximum(nb_fibers, 1)
    background = np.exp(-bvals * BACKGROUND_DIFFUSIVITY)
    return S0 * np.where(nb_fibers > 0, fibers, background)


def fit_sh(dwi: np.ndarray, gtab: GradientTable) -> np.ndarray:
    """SH coefficients (X, Y, Z, 28) of the b0-normalized diffusion-weighted signal."""
    b0 = dwi[..., gtab.b0s_mask].mean(axis=-1, keepdims=True)
    sphere = HemiSphere(xyz=gtab.bvecs[~gtab.b0s_mask])
    return sf_to_sh(
        dwi[..., ~gtab.b0s_mask] / b0,
        sphere,
        sh_order_max=SH_ORDER,
        basis_type=SH_BASIS,
        legacy=SH_LEGACY,
        smooth=SH_SMOOTH,
    )


def voxels_of(points: np.ndarray) -> np.ndarray:
    """Boolean volume of the voxels containing the given points (..., 3)."""
    mask = np.zeros(SHAPE, dtype=bool)
    mask[tuple(np.rint(points.reshape(-1, 3)).astype(int).T)] = True
    return mask


def endpoint_labels(bundles: list[Bundle]) -> np.ndarray:
    """Label volume: bundle b's head region is 2b+1, its tail region 2b+2."""
    labels = np.zeros(SHAPE, dtype=np.int16)
    for b, bundle in enumerate(bundles):
        labels[voxels_of(bundle.heads)] = 2 * b + 1
        labels[voxels_of(bundle.tails)] = 2 * b + 2
    return labels


def connectivity(bundles: list[Bundle]) -> np.ndarray:
    """Streamline counts between the endpoint regions of :func:`endpoint_labels` (label ``l`` is row
    ``l - 1``): bundle ``b`` joins rows ``2b`` and ``2b + 1``."""
    matrix = np.zeros((2 * len(bundles),) * 2, dtype=np.int64)
    for b, bundle in enumerate(bundles):
        matrix[2 * b, 2 * b + 1] = matrix[2 * b + 1, 2 * b] = len(bundle.streamlines)
    return matrix


def write_subject(subject_dir: Path, gtab: GradientTable, rng: np.random.Generator) -> None:
    """Simulate one subject and write its volumes, gradients and bundles."""
    bundles = [make_bundle(design, rng) for design in BUNDLE_DESIGNS]
    signal = multi_tensor_signal(gtab, *fiber_orientations(bundles))
    dwi = add_noise(signal, SNR, S0, noise_type="rician", rng=rng).astype(np.float32)
    crossed = voxels_of(np.concatenate([np.concatenate(b.streamlines) for b in bundles]))
    labels = endpoint_labels(bundles)

    affine = phantom_affine()
    dwi_img = nib.Nifti1Image(dwi, affine)
    volumes = {
        "dwi": dwi_img,
        "sh": nib.Nifti1Image(fit_sh(dwi, gtab).astype(np.float32), affine),
        "wm_mask": nib.Nifti1Image(binary_dilation(crossed).astype(np.uint8), affine),
        "seeding_mask": nib.Nifti1Image((labels > 0).astype(np.uint8), affine),
        "endpoints_labels": nib.Nifti1Image(labels, affine),
    }
    (subject_dir / "bundles").mkdir(parents=True)
    for name, img in volumes.items():
        img.header.set_xyzt_units("mm")
        nib.save(img, subject_dir / f"{name}.nii.gz")
    np.save(subject_dir / "connectivity.npy", connectivity(bundles))
    np.savetxt(subject_dir / "dwi.bval", gtab.bvals[None], fmt="%.6f")
    np.savetxt(subject_dir / "dwi.bvec", gtab.bvecs.T, fmt="%.10f")
    for bundle in bundles:
        sft = StatefulTractogram(bundle.streamlines, dwi_img, Space.VOX, origin=Origin.NIFTI)
        save_tractogram(sft, str(subject_dir / "bundles" / f"{bundle.name}.trk"), bbox_valid_check=True)


def write_splits(out_dir: Path, subjects: list[str]) -> None:
    """Last subject for testing, second to last for validation, the rest for training."""
    splits = {"training": subjects[:-2], "validation": subjects[-2:-1], "testing": subjects[-1:]}
    for split, names in splits.items():
        (out_dir / f"{split}_subjects.txt").write_text("".join(f"{n}\n" for n in names))


def make_phantom(out_dir: str | Path, nb_subjects: int = 5, seed: int = 1234) -> list[str]:
    """Write nb_subjects phantom subjects into out_dir; return their names (sub-00, sub-01, ...).

    Everything is built in a sibling temporary folder and moved into place at the
    end, so an interrupted run never leaves a partial phantom.
    """
    if nb_subjects < 3:
        raise ValueError(f"nb_subjects must be >= 3 (training/validation/testing), got {nb_subjects}")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"out_dir {out_dir} already exists and is not empty")
    subjects = [f"sub-{i:02d}" for i in range(nb_subjects)]
    gtab = phantom_gtab()
    with atomic_folder(out_dir, replace=False) as tmp_dir:
        for index, subject in enumerate(subjects):
            write_subject(tmp_dir / subject, gtab, np.random.default_rng([seed, index]))
        write_splits(tmp_dir, subjects)
        (tmp_dir / "groups_config.yaml").write_text(GROUPS_CONFIG)
        params = {
            "version": PHANTOM_VERSION,
            "seed": seed,
            "nb_subjects": nb_subjects,
            "shape": list(SHAPE),
            "voxel_size_mm": VOXEL_SIZE_MM,
            "bundles": [design.name for design in BUNDLE_DESIGNS],
            "snr": SNR,
            "s0": S0,
            "sh_order": SH_ORDER,
            "sh_basis": SH_BASIS,
            "sh_legacy": SH_LEGACY,
        }
        (tmp_dir / "phantom.json").write_text(json.dumps(params, indent=2) + "\n")
    return subjects
