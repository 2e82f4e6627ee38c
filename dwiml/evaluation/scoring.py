"""Tractometer scores of a candidate tractogram against ground-truth bundles with endpoint regions.

The ground truth is a set of bundles (streamlines) and a label volume of endpoint regions
(the phantom's ``endpoints_labels.nii.gz``; on real data any parcellation). Each bundle
connects the pair of regions where most of its own streamlines end.

A candidate streamline is classified from the regions of its two end points (the voxel
holding the point, see :mod:`dwiml.data.coords`):

- **valid** (VC): its regions are the pair of a ground-truth bundle;
- **invalid** (IC): both ends are in regions, but not a bundle's pair (a region to itself too);
- **no connection** (NC): an end is outside every region.

Valid bundles (VB) are the ground-truth bundles with at least one valid streamline; invalid
bundles (IB) the distinct region pairs of the invalid streamlines. Per bundle, with ``G`` the
voxels crossed by the ground truth and ``C`` those crossed by its valid candidate streamlines:
overlap ``OL = |C & G| / |G|``, overreach ``OR = |C - G| / |G|``, ``F1 = 2 |C & G| / (|C| + |G|)``.
Means are over all ground-truth bundles (a bundle without valid streamlines counts 0).
The connectivity matrix counts streamlines between each pair of regions; the candidate's is
compared with the ground truth's: Pearson correlation of the upper triangles, false-positive
connections (pairs absent from the ground truth) and the share of streamlines on them.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt

from dwiml.atomic import atomic_path
from dwiml.data.coords import to_dwiml_space, voxel_sizes
from dwiml.data.readers import load_tractogram_on, read_labels
from dwiml.errors import DwimlError

SAMPLING_VOX = 0.5  # segments are sampled at most this far apart (voxels) to find the voxels they cross
CHUNK_SEGMENTS = 1_000_000


@dataclass(frozen=True)
class Packed:
    """Streamlines as one ``(N, 3)`` array of points in dwiml voxel space and ``(B,)`` lengths."""

    points: np.ndarray
    lengths: np.ndarray

    @property
    def offsets(self) -> np.ndarray:
        return np.cumsum(self.lengths) - self.lengths

    def select(self, keep: np.ndarray) -> Packed:
        return Packed(self.points[np.repeat(keep, self.lengths)], self.lengths[keep])


@dataclass(frozen=True)
class GroundTruth:
    """Label volume of endpoint regions, each bundle's name, region pair and voxel map, the connectivity."""

    labels: np.ndarray  # (X, Y, Z) int, 0 outside every region
    names: list[str]
    regions: np.ndarray  # (K, 2) sorted label pairs
    maps: np.ndarray  # (K, X, Y, Z) bool
    region_values: np.ndarray  # (R,) the labels present, sorted
    connectivity: np.ndarray  # (R, R) streamline counts of all bundles together


def load_streamlines(path: str | Path, reference: str | Path) -> Packed:
    """A tractogram (.trk, .tck, .trx) as packed points in dwiml voxel space."""
    sft = load_tractogram_on(path, reference)
    to_dwiml_space(sft)
    points = np.asarray(sft.streamlines.get_data(), dtype=np.float64).reshape(-1, 3)
    return Packed(points, np.asarray(sft.streamlines._lengths, dtype=np.int64))


def voxel_indices(points: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Voxel of each point ``(N, 3)`` and whether it lies in the volume."""
    voxels = np.floor(points + 0.5).astype(np.int64)
    inside = ((voxels >= 0) & (voxels < np.array(shape[:3]))).all(axis=1)
    return voxels, inside


def labels_at(labels: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Label of the voxel holding each point, 0 outside the volume."""
    voxels, inside = voxel_indices(points, labels.shape)
    out = np.zeros(len(points), dtype=np.int64)
    out[inside] = labels[tuple(voxels[inside].T)]
    return out


def endpoint_regions(streamlines: Packed, labels: np.ndarray) -> np.ndarray:
    """Sorted pair ``(B, 2)`` of the labels at each streamline's first and last point."""
    first = streamlines.offsets
    ends = np.stack([labels_at(labels, streamlines.points[first]),
                     labels_at(labels, streamlines.points[first + streamlines.lengths - 1])], axis=1)
    return np.sort(ends, axis=1)


def dilate_labels(labels: np.ndarray, affine: np.ndarray, tolerance_mm: float) -> np.ndarray:
    """Grow every region into unlabelled voxels within ``tolerance_mm`` (nearest region wins)."""
    if tolerance_mm <= 0:
        return labels
    distance, nearest = distance_transform_edt(labels == 0, sampling=voxel_sizes(affine), return_indices=True)
    grown = labels[tuple(nearest)]
    return np.where(distance <= tolerance_mm, grown, 0).astype(labels.dtype)


def segment_samples(streamlines: Packed) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The points, then points along every segment at most half a voxel apart, in chunks, each with
    the index of the streamline it belongs to (what finds the voxels the streamlines cross)."""
    owner = np.repeat(np.arange(len(streamlines.lengths)), streamlines.lengths)
    yield streamlines.points, owner
    is_last = np.zeros(len(streamlines.points), dtype=bool)
    is_last[streamlines.offsets + streamlines.lengths - 1] = True
    starts = np.flatnonzero(~is_last)
    for chunk in np.array_split(starts, max(1, len(starts) // CHUNK_SEGMENTS)):
        a, b = streamlines.points[chunk], streamlines.points[chunk + 1]
        nb = np.maximum(1, np.ceil(np.linalg.norm(b - a, axis=1) / SAMPLING_VOX)).astype(np.int64)
        segment = np.repeat(np.arange(len(a)), nb)
        t = (np.arange(nb.sum()) - np.repeat(np.cumsum(nb) - nb, nb)) / nb[segment]
        yield a[segment] + t[:, None] * (b - a)[segment], owner[chunk][segment]


def voxel_map(streamlines: Packed, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean volume of the voxels the streamlines cross (segments sampled every half voxel)."""
    volume = np.zeros(shape[:3], dtype=bool)
    for points, _ in segment_samples(streamlines):
        mark(volume, points)
    return volume


def mark(volume: np.ndarray, points: np.ndarray) -> None:
    """Set the voxels holding ``points`` to True (points outside the volume are ignored)."""
    voxels, inside = voxel_indices(points, volume.shape)
    volume[tuple(voxels[inside].T)] = True


def connectivity_matrix(pairs: np.ndarray, region_values: np.ndarray) -> np.ndarray:
    """Symmetric counts ``(R, R)`` of streamlines between regions, from sorted label pairs."""
    connected = (pairs > 0).all(axis=1)
    index = np.searchsorted(region_values, pairs[connected])
    matrix = np.zeros((len(region_values),) * 2, dtype=np.int64)
    np.add.at(matrix, (index[:, 0], index[:, 1]), 1)
    return matrix + np.triu(matrix, 1).T


def load_ground_truth(bundle_paths: list[str | Path], labels_path: str | Path,
                      endpoint_tolerance_mm: float = 0.0) -> GroundTruth:
    """Ground-truth bundles (tractogram files, named by their stem) and their endpoint label volume."""
    labels_img, labels = read_labels(labels_path)
    labels = dilate_labels(labels, labels_img.affine, endpoint_tolerance_mm)
    bundles = [load_streamlines(path, labels_path) for path in bundle_paths]
    names = [Path(p).name.split(".")[0] for p in bundle_paths]
    return ground_truth(bundles, names, labels, [str(p) for p in bundle_paths], "file names", str(labels_path))


def ground_truth(bundles: list[Packed], names: list[str], labels: np.ndarray, sources: list[str],
                 naming: str = "names", labels_source: str = "the label volume") -> GroundTruth:
    """Ground truth from bundles, their names and the label volume of their endpoint regions;
    ``sources`` say where each bundle comes from (for error messages)."""
    regions = []
    for source, bundle in zip(sources, bundles):
        pairs, counts = np.unique(endpoint_regions(bundle, labels), axis=0, return_counts=True)
        pair = pairs[np.argmax(counts)] if len(pairs) else np.zeros(2, dtype=np.int64)
        if (pair == 0).any():
            raise DwimlError(f"{source}: most streamlines of this bundle do not end in two labelled "
                             f"regions of {labels_source}")
        regions.append(pair)
    regions = np.array(regions, dtype=np.int64).reshape(-1, 2)
    _, first, counts = np.unique(regions, axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        twice = tuple(regions[first[counts > 1][0]])
        raise DwimlError(f"two ground-truth bundles connect the same regions {twice}: "
                         f"{[s for s, r in zip(sources, regions) if tuple(r) == twice]}")
    if len(set(names)) < len(names):
        raise DwimlError(f"ground-truth bundles need distinct {naming}: {sources}")
    region_values = np.unique(labels[labels > 0])
    return GroundTruth(
        labels=labels,
        names=names,
        regions=regions,
        maps=np.stack([voxel_map(b, labels.shape) for b in bundles]).reshape(-1, *labels.shape),
        region_values=region_values,
        connectivity=sum((connectivity_matrix(endpoint_regions(b, labels), region_values) for b in bundles),
                         np.zeros((len(region_values),) * 2, dtype=np.int64)),
    )


def ground_truth_by_regions(streamlines: Packed, labels: np.ndarray) -> GroundTruth:
    """Ground truth from one set of streamlines: a bundle per pair of regions they connect (named
    ``"<a>-<b>"``); streamlines with an end outside every region are left out."""
    pairs = endpoint_regions(streamlines, labels)
    connected = (pairs > 0).all(axis=1)
    unique = np.unique(pairs[connected], axis=0)
    names = [f"{a}-{b}" for a, b in unique]
    bundles = [streamlines.select(connected & (pairs == pair).all(axis=1)) for pair in unique]
    return ground_truth(bundles, names, labels, names)


def assign_bundles(pairs: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Index of the ground-truth bundle whose region pair each streamline connects, -1 if none."""
    hit = (pairs[:, None, :] == regions[None, :, :]).all(axis=2)
    return np.where(hit.any(axis=1), hit.argmax(axis=1), -1)


def percent(count: int, total: int) -> float:
    return 100.0 * count / total if total else 0.0


def bundle_scores(candidate: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Overlap, overreach and F1 of a candidate voxel map against a ground-truth one."""
    both, size = int((candidate & truth).sum()), int(truth.sum())
    return {
        "overlap": both / size,
        "overreach": int((candidate & ~truth).sum()) / size,
        "f1": 2 * both / (int(candidate.sum()) + size),
    }


def connectivity_scores(pairs: np.ndarray, truth: GroundTruth) -> dict[str, float | int | None]:
    """Compare the candidate's connectivity matrix with the ground truth's."""
    candidate, reference = connectivity_matrix(pairs, truth.region_values), truth.connectivity
    upper = np.triu_indices(len(truth.region_values))
    x, y = candidate[upper], reference[upper]
    correlation = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else None
    false_positive = (candidate > 0) & (reference == 0)
    return {
        "connectivity_correlation": correlation,
        "false_positive_connections": int(false_positive[upper].sum()),
        "false_negative_connections": int(((candidate == 0) & (reference > 0))[upper].sum()),
        "false_positive_connection_rate": int(candidate[upper][false_positive[upper]].sum()) / max(len(pairs), 1),
    }


def score(candidate: Packed, truth: GroundTruth) -> dict:
    """All scores of one candidate tractogram (see the module docstring)."""
    pairs = endpoint_regions(candidate, truth.labels)
    bundle = assign_bundles(pairs, truth.regions)
    connected = (pairs > 0).all(axis=1)
    invalid = connected & (bundle < 0)
    total = len(pairs)
    per_bundle = {}
    for k, name in enumerate(truth.names):
        valid_k = bundle == k
        per_bundle[name] = {
            "regions": truth.regions[k].tolist(),
            "valid_streamlines": int(valid_k.sum()),
            **bundle_scores(voxel_map(candidate.select(valid_k), truth.labels.shape), truth.maps[k]),
        }
    means = {f"mean_{m}": float(np.mean([b[m] for b in per_bundle.values()])) for m in ("overlap", "overreach", "f1")}
    return {
        "streamlines": total,
        "valid_pct": percent(int((bundle >= 0).sum()), total),
        "invalid_pct": percent(int(invalid.sum()), total),
        "no_connection_pct": percent(int((~connected).sum()), total),
        "valid_bundles": int(sum(b["valid_streamlines"] > 0 for b in per_bundle.values())),
        "invalid_bundles": len(np.unique(pairs[invalid], axis=0)),
        **means,
        **connectivity_scores(pairs, truth),
        "bundles": per_bundle,
    }


def score_files(candidates: list[str | Path], bundle_paths: list[str | Path], labels_path: str | Path,
                reference: str | Path | None = None, endpoint_tolerance_mm: float = 0.0) -> dict[str, dict]:
    """Scores of each candidate file (loaded with ``reference``, default the label volume)."""
    truth = load_ground_truth(bundle_paths, labels_path, endpoint_tolerance_mm)
    return {str(c): score(load_streamlines(c, reference or labels_path), truth) for c in candidates}


ROW_NAMES = {
    "streamlines": "streamlines",
    "valid_pct": "valid streamlines VC (%)",
    "invalid_pct": "invalid streamlines IC (%)",
    "no_connection_pct": "no connection NC (%)",
    "valid_bundles": "valid bundles VB",
    "invalid_bundles": "invalid bundles IB",
    "mean_overlap": "mean overlap OL",
    "mean_overreach": "mean overreach OR",
    "mean_f1": "mean F1",
    "connectivity_correlation": "connectivity correlation",
    "false_positive_connections": "false-positive connections",
    "false_negative_connections": "false-negative connections",
    "false_positive_connection_rate": "false-positive connection rate",
    "VS_pct": "valid streamlines VS (%)",
    "WPC_pct": "wrong-path connections WPC (%)",
    "IC_pct": "invalid connections IC (%)",
    "NC_pct": "no connection NC (%)",
    "IS_pct": "invalid streamlines IS (%)",
    "VB": "valid bundles VB",
    "IB": "invalid bundles IB",
    "mean_OL": "mean overlap OL",
    "mean_OR_pct_gt": "mean overreach OR (/ ground truth)",
    "mean_OR_pct_vs": "mean overreach OR (/ recovered)",
    "mean_F1": "mean F1",
    "VS": "VS",
    "WPC": "WPC",
    "OL": "OL",
    "OR_pct_gt": "OR (/ ground truth)",
    "OR_pct_vs": "OR (/ recovered)",
    "F1": "F1",
    "valid_streamlines": "valid streamlines",
    "overlap": "OL",
    "overreach": "OR",
    "f1": "F1",
}


def format_table(results: dict[str, dict]) -> str:
    """A readable table: one row per metric (per-bundle metrics last), one column per candidate."""
    first = next(iter(results.values()))
    rows = [(ROW_NAMES[key], [r[key] for r in results.values()]) for key in first if not isinstance(first[key], dict)]
    for name, bundle in first["bundles"].items():
        for key in (k for k in bundle if k in ROW_NAMES):
            rows.append((f"{name}: {ROW_NAMES[key]}", [r["bundles"][name][key] for r in results.values()]))

    def cell(value) -> str:
        return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    names = [Path(c).name for c in results]
    header = ["", *(names if len(set(names)) == len(names) else results)]
    lines = [header] + [[key, *map(cell, values)] for key, values in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
                     for line in lines)


def save_json(results: dict[str, dict], path: str | Path) -> None:
    """Write the scores as JSON under a temporary name, then rename it into place."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(results, indent=2) + "\n")
