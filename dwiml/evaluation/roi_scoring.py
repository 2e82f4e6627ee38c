"""The ROI-based reference protocol: the ISMRM 2015 challenge scoring as scilpy's
``scil_tractogram_segment_with_ROI_and_score`` defines it (Renauld et al. 2023), with each streamline
given one class (scilpy's ``--unique --compute_ic --save_wpc_separately``).

A bundle configuration (JSON) names each ground-truth bundle with its criteria, paths relative to
the file::

    {"CST_left": {"head": "rois/CST_left_head.nii.gz", "tail": "rois/CST_left_tail.nii.gz",
                  "gt_mask": "masks/CST_left.nii.gz",      # NIfTI mask or a tractogram (optional)
                  "all_mask": "masks/CST_left.nii.gz",     # every crossed voxel inside (optional)
                  "any_mask": "rois/internal_capsule.nii.gz",  # one crossed voxel inside (optional)
                  "length": [40, 200],                     # mm, min < length < max (optional)
                  "angle": 300}}                           # winding below this, degrees (optional)

Bundles are taken in the file's order. A candidate streamline is

- **VS** of the first bundle whose head and tail hold its two end points (either way round, the
  voxel holding each point) and whose other criteria it meets;
- else **WPC** (wrong-path connection) of the first bundle whose head and tail it joins;
- else **IC** (invalid connection) when its ends lie in two different ROIs (heads and tails of all
  bundles, one ROI per distinct file) that are no bundle's pair: the first such pair, pairs in
  sorted order of file names;
- else **NC** (no connection). IS = WPC + IC + NC.

VB is the number of bundles with a VS, IB the number of ROI pairs with an IC. With a ``gt_mask``,
per bundle from the voxels ``B`` crossed by its VS and the mask ``A``: ``OL = |A & B| / |A|``,
``OR_pct_gt = |B - A| / |A|``, ``OR_pct_vs = |B - A| / |B|`` (0 without VS), ``F1`` (Dice)
``= 2 |A & B| / (|A| + |B|)``; means are over the bundles with a mask (one without VS counts 0).
The winding is dipy's (``dipy.tracking.metrics.winding``: the angle swept around the centroid in
the best-fitting plane; a straight line sweeps 180), lengths are in mm, and crossed voxels are
found as in :mod:`dwiml.evaluation.scoring` (segments sampled every half voxel).
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import binary_dilation

from dwiml.data.coords import vox_to_mm
from dwiml.evaluation.scoring import (Packed, load_streamlines, percent, segment_samples, voxel_indices,
                                      voxel_map)
from dwiml.errors import DwimlError

MASK_KEYS = ("head", "tail", "gt_mask", "all_mask", "any_mask")
KEYS = (*MASK_KEYS, "length", "angle")


@dataclass(frozen=True)
class Bundle:
    """One ground-truth bundle's criteria; masks are boolean volumes, ``head``/``tail`` ROI indices."""

    name: str
    head: int
    tail: int
    gt_mask: np.ndarray | None
    all_mask: np.ndarray | None
    any_mask: np.ndarray | None
    length: tuple[float, float] | None
    angle: float | None


@dataclass(frozen=True)
class Protocol:
    """The bundles, the endpoint ROIs (sorted by file name) and the grid they lie on."""

    bundles: list[Bundle]
    rois: np.ndarray  # (R, X, Y, Z) bool
    roi_names: list[str]
    affine: np.ndarray
    reference: Path  # an image of the grid, to load the candidates with


def load_protocol(config_path: str | Path, dilate_endpoints: int = 0) -> Protocol:
    """Read a bundle configuration; endpoint ROIs grown by ``dilate_endpoints`` voxel passes."""
    config_path = Path(config_path)
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as e:
        raise DwimlError(f"bundle configuration {config_path}: cannot read it as JSON ({e})") from None
    if not isinstance(config, dict) or not config:
        raise DwimlError(f"bundle configuration {config_path}: expected a mapping of bundle names to criteria")
    for name, criteria in config.items():
        _check_criteria(config_path, name, criteria)
    roi_files = sorted({str(config_path.parent / c[k]) for c in config.values() for k in ("head", "tail")})
    grid = _load_image(Path(roi_files[0]), f"bundle configuration {config_path}")
    loaded: dict[str, np.ndarray] = {}

    def mask(relative: str, where: str) -> np.ndarray:
        path = str(config_path.parent / relative)
        if path not in loaded:
            loaded[path] = _load_mask(Path(path), grid, where)
        return loaded[path]

    rois = [mask(f, f"bundle configuration {config_path}") for f in roi_files]
    if dilate_endpoints > 0:
        rois = [binary_dilation(r, iterations=dilate_endpoints) for r in rois]
    bundles = []
    for name, c in config.items():
        where = f"bundle configuration {config_path}, bundle '{name}'"
        masks = {k: mask(c[k], where) if k in c else None for k in ("gt_mask", "all_mask", "any_mask")}
        bundles.append(Bundle(name, roi_files.index(str(config_path.parent / c["head"])),
                              roi_files.index(str(config_path.parent / c["tail"])), **masks,
                              length=tuple(map(float, c["length"])) if "length" in c else None,
                              angle=float(c["angle"]) if "angle" in c else None))
    return Protocol(bundles, np.stack(rois), [Path(f).name.split(".")[0] for f in roi_files], grid.affine,
                    Path(roi_files[0]))


def _check_criteria(config_path: Path, name: str, criteria) -> None:
    where = f"bundle configuration {config_path}, bundle '{name}'"
    if not isinstance(criteria, dict):
        raise DwimlError(f"{where}: expected a mapping of criteria")
    if "endpoints" in criteria:
        raise DwimlError(f"{where}: give the two endpoint regions as 'head' and 'tail' ('endpoints' is not read)")
    unknown = sorted(set(criteria) - set(KEYS))
    if unknown:
        raise DwimlError(f"{where}: unknown key(s) {unknown}; allowed: {list(KEYS)}")
    missing = [k for k in ("head", "tail") if k not in criteria]
    if missing:
        raise DwimlError(f"{where}: missing {missing}")
    if any(not isinstance(criteria[k], str) for k in MASK_KEYS if k in criteria):
        raise DwimlError(f"{where}: {', '.join(MASK_KEYS)} are file names")
    length = criteria.get("length", [0, 1])
    if not (isinstance(length, list) and len(length) == 2 and all(isinstance(v, (int, float)) for v in length)
            and length[0] < length[1]):
        raise DwimlError(f"{where}: length is [min, max] in mm with min < max, got {length!r}")
    if not isinstance(criteria.get("angle", 0), (int, float)) or isinstance(criteria.get("angle"), bool):
        raise DwimlError(f"{where}: angle is a number of degrees, got {criteria['angle']!r}")


def _load_image(path: Path, where: str) -> nib.Nifti1Image:
    if not path.is_file():
        raise DwimlError(f"{where}: no file {path}")
    try:
        return nib.load(str(path))
    except (OSError, nib.filebasedimages.ImageFileError) as e:
        raise DwimlError(f"{where}: {path}: cannot load it as a NIfTI mask ({e})") from None


def _load_mask(path: Path, grid: nib.Nifti1Image, where: str) -> np.ndarray:
    """A NIfTI mask (non-zero voxels), or the voxels crossed by a tractogram; on the grid of ``grid``."""
    if path.name.endswith((".trk", ".tck", ".trx")) and path.is_file():
        return voxel_map(load_streamlines(path, grid.get_filename()), grid.shape[:3])
    img = _load_image(path, where)
    if img.shape[:3] != grid.shape[:3] or not np.allclose(img.affine, grid.affine, atol=1e-4):
        raise DwimlError(f"{where}: {path} does not lie on the grid of {grid.get_filename()}")
    return np.asarray(img.dataobj).reshape(img.shape[:3]) > 0


def winding(streamlines: Packed) -> np.ndarray:
    """dipy's winding (degrees) of every streamline at once: the points, centred and projected on the
    streamline's two main axes, and the angle between consecutive ones, summed."""
    owner = np.repeat(np.arange(len(streamlines.lengths)), streamlines.lengths)
    nb = np.maximum(streamlines.lengths, 1)[:, None]
    centred = streamlines.points - (np.stack([np.bincount(owner, streamlines.points[:, i],
                                                          minlength=len(nb)) for i in range(3)], 1) / nb)[owner]
    scatter = np.zeros((len(nb), 3, 3))
    np.add.at(scatter, owner, centred[:, :, None] * centred[:, None, :])
    axes = np.linalg.eigh(scatter)[1][:, :, 1:]  # the two largest eigenvalues' eigenvectors
    projected = np.einsum("ni,nij->nj", centred, axes[owner])
    same = owner[1:] == owner[:-1]
    v0, v1 = projected[:-1][same], projected[1:][same]
    with np.errstate(invalid="ignore", divide="ignore"):  # a point on the centroid: nan, as in dipy
        cos = (v0 * v1).sum(1) / (np.linalg.norm(v0, axis=1) * np.linalg.norm(v1, axis=1))
    return np.rad2deg(np.bincount(owner[1:][same], np.arccos(np.clip(cos, -1, 1)), minlength=len(nb)))


def lengths_mm(streamlines: Packed, affine: np.ndarray) -> np.ndarray:
    """Length of every streamline in mm."""
    owner = np.repeat(np.arange(len(streamlines.lengths)), streamlines.lengths)
    steps = np.linalg.norm(np.diff(vox_to_mm(streamlines.points, affine), axis=0), axis=1)
    same = owner[1:] == owner[:-1]
    return np.bincount(owner[1:][same], steps[same], minlength=len(streamlines.lengths))


def touches(streamlines: Packed, mask: np.ndarray) -> np.ndarray:
    """Whether each streamline crosses a voxel of ``mask`` (the outside of the volume counts as
    outside the mask)."""
    hit = np.zeros(len(streamlines.lengths), dtype=bool)
    for points, owner in segment_samples(streamlines):
        voxels, inside = voxel_indices(points, mask.shape)
        hit[owner[inside][mask[tuple(voxels[inside].T)]]] = True
    return hit


def leaves(streamlines: Packed, mask: np.ndarray) -> np.ndarray:
    """Whether each streamline crosses a voxel outside ``mask`` (or leaves the volume)."""
    hit = np.zeros(len(streamlines.lengths), dtype=bool)
    for points, owner in segment_samples(streamlines):
        voxels, inside = voxel_indices(points, mask.shape)
        outside = ~inside
        outside[inside] = ~mask[tuple(voxels[inside].T)]
        hit[owner[outside]] = True
    return hit


def meets_criteria(streamlines: Packed, bundle: Bundle, affine: np.ndarray) -> np.ndarray:
    """Whether each streamline (all joining the bundle's head and tail) meets its other criteria."""
    ok = np.ones(len(streamlines.lengths), dtype=bool)
    if bundle.all_mask is not None:
        ok &= ~leaves(streamlines, bundle.all_mask)
    if bundle.any_mask is not None:
        ok &= touches(streamlines, bundle.any_mask)
    if bundle.length is not None:
        length = lengths_mm(streamlines, affine)
        ok &= (length > bundle.length[0]) & (length < bundle.length[1])
    if bundle.angle is not None:
        ok &= winding(streamlines) < bundle.angle
    return ok


def classify(candidate: Packed, protocol: Protocol) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per streamline: the bundle it is a VS of, the bundle it is a WPC of, the ROI pair it is an IC
    of (-1 where not); pairs are numbered in the order of :func:`invalid_pairs`."""
    first = candidate.offsets
    ends = [candidate.points[first], candidate.points[first + candidate.lengths - 1]]
    in_roi = []
    for points in ends:  # (B, R): which ROIs hold each end
        voxels, inside = voxel_indices(points, protocol.rois.shape[1:])
        held = np.zeros((len(points), len(protocol.rois)), dtype=bool)
        held[inside] = protocol.rois[(slice(None), *voxels[inside].T)].T
        in_roi.append(held)

    def joins(a: int, b: int) -> np.ndarray:
        return (in_roi[0][:, a] & in_roi[1][:, b]) | (in_roi[0][:, b] & in_roi[1][:, a])

    nb = len(candidate.lengths)
    vs, wpc, ic = (np.full(nb, -1, dtype=np.int64) for _ in range(3))
    for k, bundle in enumerate(protocol.bundles):
        candidates = joins(bundle.head, bundle.tail) & (vs < 0)
        joined = np.flatnonzero(candidates)
        valid = meets_criteria(candidate.select(candidates), bundle, protocol.affine)
        vs[joined[valid]] = k
        wpc[joined[~valid & (wpc[joined] < 0)]] = k
    wpc[vs >= 0] = -1
    for p, (a, b) in enumerate(invalid_pairs(protocol)):
        ic[joins(a, b) & (vs < 0) & (wpc < 0) & (ic < 0)] = p
    return vs, wpc, ic


def invalid_pairs(protocol: Protocol) -> list[tuple[int, int]]:
    """The pairs of distinct ROIs that are no bundle's head and tail, in sorted order."""
    pairs = {tuple(sorted((b.head, b.tail))) for b in protocol.bundles}
    return [p for p in itertools.combinations(range(len(protocol.rois)), 2) if p not in pairs]


def score_rois(candidate: Packed, protocol: Protocol) -> dict:
    """All scores of one candidate tractogram under the protocol (see the module docstring)."""
    vs, wpc, ic = classify(candidate, protocol)
    total = len(vs)
    counts = {"VS": int((vs >= 0).sum()), "WPC": int((wpc >= 0).sum()), "IC": int((ic >= 0).sum())}
    counts["NC"] = total - sum(counts.values())
    per_bundle = {}
    for k, bundle in enumerate(protocol.bundles):
        per_bundle[bundle.name] = {"VS": int((vs == k).sum()), "WPC": int((wpc == k).sum())}
        if bundle.gt_mask is not None:
            per_bundle[bundle.name].update(mask_scores(voxel_map(candidate.select(vs == k), bundle.gt_mask.shape),
                                                       bundle.gt_mask))
    scored = [b for b in per_bundle.values() if "OL" in b]
    means = {f"mean_{m}": float(np.mean([b[m] for b in scored])) if scored else None
             for m in ("OL", "OR_pct_gt", "OR_pct_vs", "F1")}
    pairs = invalid_pairs(protocol)
    return {
        "streamlines": total,
        **{f"{key}_pct": percent(value, total) for key, value in counts.items()},
        "IS_pct": percent(total - counts["VS"], total),
        "VB": int(sum(b["VS"] > 0 for b in per_bundle.values())),
        "IB": len(np.unique(ic[ic >= 0])),
        **means,
        "invalid_bundles": {f"{protocol.roi_names[pairs[p][0]]}_{protocol.roi_names[pairs[p][1]]}": int(n)
                            for p, n in zip(*np.unique(ic[ic >= 0], return_counts=True))},
        "bundles": per_bundle,
    }


def mask_scores(recovered: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """OL, OR (over the ground truth and over the recovered voxels) and F1 of a recovered voxel map."""
    both, size, found = int((recovered & truth).sum()), int(truth.sum()), int(recovered.sum())
    over = int((recovered & ~truth).sum())
    return {"OL": both / size, "OR_pct_gt": over / size, "OR_pct_vs": over / found if found else 0.0,
            "F1": 2 * both / (size + found)}


def score_files_rois(candidates: list[str | Path], config_path: str | Path, reference: str | Path | None = None,
                     dilate_endpoints: int = 0) -> dict[str, dict]:
    """ROI-protocol scores of each candidate file (loaded with ``reference``, default the first ROI)."""
    protocol = load_protocol(config_path, dilate_endpoints)
    return {str(c): score_rois(load_streamlines(c, reference or protocol.reference), protocol) for c in candidates}
