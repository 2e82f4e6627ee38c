"""Synthetic diffusion MRI phantom (version 3): nine bundles in the hard configurations of tractography.

Each subject holds nine tube-shaped bundles drawn as Bezier centrelines in four slabs of the volume
(voxel space): three crossings (``cross_lr`` with ``cross_ap`` at ~90 degrees, ``cross_lr`` with
``cross_45`` at ~45 degrees), a bottleneck (``bottleneck_a`` and ``bottleneck_b`` converge into one
narrow passage and diverge again), a kissing pair (``kiss_a`` and ``kiss_b`` run tangent where their
arcs touch), a fanning bundle (``fanning``, narrow at its start, wide at its end) and a U-shaped bend
(``u_bend``). :data:`CONFIGURATIONS` tags each bundle with its configuration.

Subjects differ as brains do: every subject draws a global rotation, a scale and a shift of the whole
geometry, a jitter of the control points (curvature), a radius factor and diffusivities per bundle,
and an SNR in ``SNR_RANGE``. Every voxel a bundle's streamlines pass through holds that bundle's
fiber, along the mean direction of its streamlines there; the DWI is a multi-tensor signal (equal
fractions of the fibers present, isotropic background elsewhere) with Rician noise, on the real
64-direction b=1000 gradient table shipped with dipy. Volumes: ``sh`` (the SH fit, order 6, of the
b0-normalized signal, dipy ``descoteaux07`` with ``legacy=False``: the group ``input``), ``fodf``
(dipy's CSD, :mod:`dwiml.data.csd`), ``wm_mask`` (exactly the voxels the bundles pass through),
``endpoints_labels`` (each bundle's head and tail regions) and ``seeding_mask`` (those regions).

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
from scipy.spatial.transform import Rotation

from dwiml.atomic import atomic_folder
from dwiml.data import csd

PHANTOM_VERSION = 3  # 3: nine bundles in hard configurations, subjects drawn at random, an fODF group
SHAPE = (32, 32, 26)
VOXEL_SIZE_MM = 2.0
S0 = 100.0
SNR_RANGE = (10.0, 30.0)
LAMBDA_PAR_RANGE = (1.5e-3, 1.9e-3)  # fiber diffusivities (mm^2/s), drawn per bundle
LAMBDA_PERP_RANGE = (0.2e-3, 0.45e-3)
BACKGROUND_DIFFUSIVITY = 0.9e-3  # isotropic, grey-matter-like (mm^2/s)
SH_ORDER = 6
SH_BASIS = "descoteaux07"
SH_LEGACY = False
SH_SMOOTH = 0.006
STEP = 0.375  # voxels between centreline points (0.75 mm)
NB_STREAMLINES = 60  # per bundle
END_JITTER_MM = 2.0  # maximal trim of each streamline end
ENDPOINT_MM = 4.0  # length of the head / tail regions
MAX_ROTATION_DEG = (3.0, 3.0, 10.0)  # about x, y, z
SCALE_RANGE = (0.9, 1.0)
MAX_SHIFT = 0.5  # voxels
CONTROL_POINT_JITTER = (0.5, 1.0)  # voxels, in-plane: end points, inner points (curvature)
RADIUS_FACTOR_RANGE = (0.85, 1.15)
MARGIN = 0.5  # voxels: every streamline point stays this far inside the volume
# Tracking stops when it leaves wm_mask, one voxel at most past the endpoint regions:
# score tracked tractograms with regions grown by this distance.
SCORING_TOLERANCE_MM = VOXEL_SIZE_MM

GROUPS_CONFIG = f"""\
input:
  type: volume
  files: [sh.nii.gz]
  standardization: none
  sh_basis: {SH_BASIS}{"_legacy" if SH_LEGACY else ""}
  sh_order: {SH_ORDER}
fodf:
  type: volume
  files: [fodf.nii.gz]
  standardization: none
  sh_basis: {csd.SH_BASIS}{"_legacy" if csd.SH_LEGACY else ""}
  sh_order: {csd.SH_ORDER}
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
    """A bundle template: name, Bezier control points in the plane of its slab (voxels), the slab's
    height ``z``, and its radius (voxels) at its start, middle and end, in and out of the plane."""

    name: str
    control_points: tuple[tuple[float, float], ...]
    z: float
    radius_in_plane: tuple[float, float, float] = (2.0, 2.0, 2.0)
    radius_out_of_plane: tuple[float, float, float] = (1.8, 1.8, 1.8)


BUNDLE_DESIGNS = (
    BundleDesign("cross_lr", ((2.0, 10.0), (16.0, 11.5), (29.0, 10.0)), 4.0),
    BundleDesign("cross_ap", ((10.0, 2.0), (11.5, 16.0), (10.0, 29.0)), 4.0),
    BundleDesign("cross_45", ((16.0, 3.0), (22.5, 9.5), (29.0, 16.0)), 4.0),
    BundleDesign("bottleneck_a", ((2.0, 25.0), (11.0, 14.0), (21.0, 14.0), (29.0, 25.0)), 10.0,
                 (2.0, 1.0, 2.0)),
    BundleDesign("bottleneck_b", ((2.0, 7.0), (11.0, 18.0), (21.0, 18.0), (29.0, 7.0)), 10.0,
                 (2.0, 1.0, 2.0)),
    BundleDesign("kiss_a", ((2.0, 4.0), (16.0, 24.6), (29.0, 4.0)), 16.0),
    BundleDesign("kiss_b", ((2.0, 28.0), (16.0, 7.4), (29.0, 28.0)), 16.0),
    BundleDesign("fanning", ((3.0, 8.0), (15.0, 8.5), (28.0, 8.0)), 22.0, (0.8, 2.2, 4.0), (1.2, 1.5, 1.8)),
    BundleDesign("u_bend", ((6.0, 28.5), (6.0, 15.0), (26.0, 15.0), (26.0, 28.5)), 22.0),
)
CONFIGURATIONS = {
    "cross_lr": "crossing 90+45", "cross_ap": "crossing 90", "cross_45": "crossing 45",
    "bottleneck_a": "bottleneck", "bottleneck_b": "bottleneck", "kiss_a": "kissing", "kiss_b": "kissing",
    "fanning": "fanning", "u_bend": "U bend",
}


@dataclass
class Bundle:
    """One subject's bundle: its streamlines with their unit tangents, and its end regions."""

    name: str
    streamlines: list[np.ndarray]
    tangents: list[np.ndarray]
    heads: np.ndarray  # (S, K, 3) first ENDPOINT_MM of each streamline
    tails: np.ndarray  # (S, K, 3) last ENDPOINT_MM of each streamline
    lambda_par: float
    lambda_perp: float


@dataclass(frozen=True)
class Pose:
    """The subject's global transform of the geometry about the volume's centre."""

    rotation: np.ndarray  # (3, 3)
    scale: float
    shift: np.ndarray  # (3,)

    def apply(self, points: np.ndarray) -> np.ndarray:
        centre = (np.array(SHAPE) - 1) / 2
        return (points - centre) @ (self.scale * self.rotation).T + centre + self.shift


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
    """Points (len(t), D) of the Bezier curve with the given control points."""
    n = len(control_points) - 1
    bernstein = np.stack([comb(n, k) * t**k * (1 - t) ** (n - k) for k in range(n + 1)], axis=1)
    return bernstein @ control_points


def resample_by_arclength(points: np.ndarray, step: float) -> np.ndarray:
    """Resample a dense polyline to points ``step`` apart along its arc length."""
    arclength = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    targets = np.arange(0.0, arclength[-1], step)
    return np.stack([np.interp(targets, arclength, points[:, d]) for d in range(points.shape[1])], axis=1)


def unit(vectors: np.ndarray) -> np.ndarray:
    """Normalize vectors along the last axis."""
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def draw_pose(rng: np.random.Generator) -> Pose:
    """A random rotation (about x, y, z), scale and shift."""
    angles = rng.uniform(-1, 1, 3) * MAX_ROTATION_DEG
    return Pose(Rotation.from_euler("xyz", angles, degrees=True).as_matrix(), rng.uniform(*SCALE_RANGE),
                rng.uniform(-MAX_SHIFT, MAX_SHIFT, 3))


def fits(points: np.ndarray) -> bool:
    """Whether every point lies ``MARGIN`` inside the volume."""
    return bool(((points >= MARGIN) & (points <= np.array(SHAPE) - 1 - MARGIN)).all())


def canonical_lines(design: BundleDesign, rng: np.random.Generator) -> np.ndarray:
    """The bundle's streamlines ``(S, M, 3)`` before the subject's pose: the jittered centreline, each
    streamline at a fixed place of the tube's (elliptic, radius-varying) cross-section."""
    points = np.array(design.control_points)
    jitter = np.full(len(points), CONTROL_POINT_JITTER[1])
    jitter[[0, -1]] = CONTROL_POINT_JITTER[0]
    points = points + rng.uniform(-1, 1, points.shape) * jitter[:, None]
    planar = resample_by_arclength(bezier(points, np.linspace(0, 1, 2000)), STEP)
    centreline = np.column_stack([planar, np.full(len(planar), design.z)])
    tangents = unit(np.gradient(centreline, axis=0))
    normals = unit(np.cross([0.0, 0.0, 1.0], tangents))
    binormals = np.cross(tangents, normals)
    t = np.linspace(0, 1, len(centreline))
    factor = rng.uniform(*RADIUS_FACTOR_RANGE)
    radius_in = factor * np.interp(t, [0, 0.5, 1], design.radius_in_plane)
    radius_out = factor * np.interp(t, [0, 0.5, 1], design.radius_out_of_plane)

    radius = np.sqrt(rng.uniform(0, 1, NB_STREAMLINES))
    phase = rng.uniform(0, 2 * np.pi, NB_STREAMLINES)
    in_plane = (radius * np.cos(phase))[:, None, None] * (radius_in[:, None] * normals)
    out_of_plane = (radius * np.sin(phase))[:, None, None] * (radius_out[:, None] * binormals)
    return centreline + in_plane + out_of_plane


def make_bundles(rng: np.random.Generator) -> tuple[list[Bundle], Pose]:
    """The subject's bundles (streamlines trimmed at random at both ends) and its pose; the scale is
    reduced until every streamline fits inside the volume."""
    lines = [canonical_lines(design, rng) for design in BUNDLE_DESIGNS]
    pose = draw_pose(rng)
    while not all(fits(pose.apply(line)) for line in lines):
        pose = Pose(pose.rotation, 0.97 * pose.scale, pose.shift)
    step_mm = STEP * VOXEL_SIZE_MM
    max_trim = int(END_JITTER_MM / step_mm)
    nb_end = int(round(ENDPOINT_MM / step_mm)) + 1
    rows = np.arange(NB_STREAMLINES)[:, None]
    bundles = []
    for design, line in zip(BUNDLE_DESIGNS, lines):
        line = pose.apply(line)
        tangents = unit(np.gradient(line, axis=1))
        starts = rng.integers(0, max_trim + 1, NB_STREAMLINES)
        stops = line.shape[1] - rng.integers(0, max_trim + 1, NB_STREAMLINES)
        bundles.append(Bundle(
            name=design.name,
            streamlines=[s[a:b] for s, a, b in zip(line, starts, stops)],
            tangents=[s[a:b] for s, a, b in zip(tangents, starts, stops)],
            heads=line[rows, starts[:, None] + np.arange(nb_end)],
            tails=line[rows, stops[:, None] - 1 - np.arange(nb_end)],
            lambda_par=rng.uniform(*LAMBDA_PAR_RANGE),
            lambda_perp=rng.uniform(*LAMBDA_PERP_RANGE),
        ))
    return bundles, pose


def voxel_ids(points: np.ndarray) -> tuple[np.ndarray, ...]:
    """Index arrays of the voxels holding points ``(..., 3)``."""
    return tuple(np.rint(points.reshape(-1, 3)).astype(int).T)


def fiber_orientations(bundles: list[Bundle]) -> tuple[np.ndarray, np.ndarray]:
    """Per-bundle fiber field: directions (B, X, Y, Z, 3) and presence (B, X, Y, Z).

    A voxel holds bundle b's fiber when one of its streamline points lies in it; the direction is
    the mean unit tangent of those points.
    """
    directions = np.zeros((len(bundles), *SHAPE, 3))
    for b, bundle in enumerate(bundles):
        ids = voxel_ids(np.concatenate(bundle.streamlines))
        tangents = np.concatenate(bundle.tangents)
        for d in range(3):
            np.add.at(directions[b, ..., d], ids, tangents[:, d])
    norms = np.linalg.norm(directions, axis=-1)
    present = norms > 1e-6
    directions[present] /= norms[present][:, None]
    return directions, present


def multi_tensor_signal(gtab: GradientTable, directions: np.ndarray, present: np.ndarray,
                        lambda_par: np.ndarray, lambda_perp: np.ndarray) -> np.ndarray:
    """Noise-free multi-tensor DWI (X, Y, Z, N), vectorized over the voxels holding a fiber.

    S = S0 * sum_k f_k exp(-b g^T D_k g) with axially symmetric D_k along fiber k (diffusivities
    ``lambda_par[k]``, ``lambda_perp[k]``) and equal fractions f_k; voxels without fiber get an
    isotropic tensor. Same values as ``dipy.sims.voxel.multi_tensor`` voxel by voxel.
    """
    bvals, bvecs = gtab.bvals, gtab.bvecs
    signal = np.broadcast_to(S0 * np.exp(-bvals * BACKGROUND_DIFFUSIVITY), (*present.shape[1:], len(bvals))).copy()
    fiber = present.any(axis=0)
    dirs, there = directions[:, fiber], present[:, fiber]  # (B, V, 3), (B, V)
    cos2 = np.einsum("bvc,nc->bvn", dirs, bvecs) ** 2
    perp, par = np.asarray(lambda_perp)[:, None, None], np.asarray(lambda_par)[:, None, None]
    attenuations = np.exp(-bvals * (perp * (bvecs**2).sum(axis=1) + (par - perp) * cos2)) * there[..., None]
    signal[fiber] = S0 * attenuations.sum(axis=0) / there.sum(axis=0)[:, None]
    return signal


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
    mask[voxel_ids(points)] = True
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


def write_subject(subject_dir: Path, gtab: GradientTable, rng: np.random.Generator) -> dict:
    """Simulate one subject, write its volumes, gradients and bundles; return what it drew."""
    bundles, pose = make_bundles(rng)
    directions, present = fiber_orientations(bundles)
    signal = multi_tensor_signal(gtab, directions, present, np.array([b.lambda_par for b in bundles]),
                                 np.array([b.lambda_perp for b in bundles]))
    snr = rng.uniform(*SNR_RANGE)
    dwi = add_noise(signal, snr, S0, noise_type="rician", rng=rng).astype(np.float32)
    wm = present.any(axis=0)
    labels = endpoint_labels(bundles)

    affine = phantom_affine()
    dwi_img = nib.Nifti1Image(dwi, affine)
    volumes = {
        "dwi": dwi_img,
        "sh": nib.Nifti1Image(fit_sh(dwi, gtab).astype(np.float32), affine),
        "fodf": nib.Nifti1Image(csd.fit_csd(dwi, gtab, wm), affine),
        "wm_mask": nib.Nifti1Image(wm.astype(np.uint8), affine),
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
    return {"snr": round(snr, 3), "scale": round(pose.scale, 4),
            "rotation_deg": np.round(Rotation.from_matrix(pose.rotation).as_euler("xyz", degrees=True), 3).tolist(),
            "shift_vox": np.round(pose.shift, 3).tolist()}


def write_splits(out_dir: Path, subjects: list[str], nb_validation: int, nb_testing: int) -> None:
    """The last ``nb_testing`` subjects for testing, the ``nb_validation`` before them for validation,
    the rest for training."""
    cut = len(subjects) - nb_testing
    splits = {"training": subjects[:cut - nb_validation], "validation": subjects[cut - nb_validation:cut],
              "testing": subjects[cut:]}
    for split, names in splits.items():
        (out_dir / f"{split}_subjects.txt").write_text("".join(f"{n}\n" for n in names))


def make_phantom(out_dir: str | Path, nb_subjects: int = 5, seed: int = 1234, nb_validation: int = 1,
                 nb_testing: int = 1, overwrite: bool = False) -> list[str]:
    """Write nb_subjects phantom subjects into out_dir; return their names (sub-00, sub-01, ...).

    Everything is built in a sibling temporary folder and moved into place at the
    end, so an interrupted run never leaves a partial phantom; with ``overwrite``, it replaces an existing
    ``out_dir`` only then.
    """
    if nb_validation < 1 or nb_testing < 1 or nb_subjects < nb_validation + nb_testing + 1:
        raise ValueError(f"need >= 1 validation and testing subject and >= 1 training subject, got "
                         f"nb_subjects={nb_subjects}, nb_validation={nb_validation}, nb_testing={nb_testing}")
    out_dir = Path(out_dir)
    if not overwrite and out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"out_dir {out_dir} already exists and is not empty")
    subjects = [f"sub-{i:02d}" for i in range(nb_subjects)]
    gtab = phantom_gtab()
    with atomic_folder(out_dir, replace=overwrite) as tmp_dir:
        draws = {subject: write_subject(tmp_dir / subject, gtab, np.random.default_rng([seed, index]))
                 for index, subject in enumerate(subjects)}
        write_splits(tmp_dir, subjects, nb_validation, nb_testing)
        (tmp_dir / "groups_config.yaml").write_text(GROUPS_CONFIG)
        params = {
            "version": PHANTOM_VERSION,
            "seed": seed,
            "nb_subjects": nb_subjects,
            "shape": list(SHAPE),
            "voxel_size_mm": VOXEL_SIZE_MM,
            "bundles": [design.name for design in BUNDLE_DESIGNS],
            "configurations": CONFIGURATIONS,
            "snr_range": list(SNR_RANGE),
            "s0": S0,
            "sh_order": SH_ORDER,
            "sh_basis": SH_BASIS,
            "sh_legacy": SH_LEGACY,
            "subjects": draws,
        }
        (tmp_dir / "phantom.json").write_text(json.dumps(params, indent=2) + "\n")
    return subjects
