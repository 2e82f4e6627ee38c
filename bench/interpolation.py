"""Trilinear interpolation speed: dwiml against torch's grid_sample, scipy's map_coordinates and the
memory-traffic floor.

Samples a (size^3, features) float32 volume at random points (some up to one voxel outside)
on the CPU and prints, measured side by side in one run (the candidates take turns), the median
times, the ratios and the largest difference to scipy relative to the largest value. The floor is
a contiguous copy of the bytes the 8 corners of every point represent (8 x points x features
float32); the gather of those 8 corner rows (random rows, ``index_select``) is shown beside it.
Usage:
    python bench/interpolation.py [--points 1000000] [--features 45] [--size 100] [--threads 2] [--max-load L]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import map_coordinates

from dwiml.data.interpolation import trilinear
from timing import add_machine_options, begin, finish, median_seconds_each  # bench/, the script's folder, is on sys.path


def grid_sample(volume: torch.Tensor, points: torch.Tensor, batch: int) -> torch.Tensor:
    """torch's kernel on a channels_last_3d view of ``volume`` (X, Y, Z, F), no copy.

    ``batch`` > 1 expands the volume (still no copy) and splits the points in that many
    parts, which lets the kernel use one thread per part.
    """
    channels_last = volume.permute(3, 0, 1, 2)[None].expand(batch, -1, -1, -1, -1)
    size = torch.tensor(volume.shape[:3], dtype=torch.float64)
    grid = (2 * points.double() / (size - 1) - 1).flip(1).float()  # align_corners=True, (z, y, x) order
    per_part = -(-len(points) // batch)
    grid = F.pad(grid, (0, 0, 0, per_part * batch - len(points))).view(batch, 1, 1, per_part, 3)
    out = F.grid_sample(channels_last, grid, align_corners=True)  # (batch, F, 1, 1, per_part)
    return out.permute(0, 2, 3, 4, 1).reshape(batch * per_part, -1)[: len(points)]


def corner_rows_of(volume: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``(8 N,)`` rows of the channels-last table: the 8 corners of every point (clamped lower corner)."""
    nx, ny, nz = volume.shape[:3]
    lower = points.floor().long().clamp_min(0).minimum(torch.tensor([nx, ny, nz]) - 2)
    first = lower[:, 0] * (ny * nz) + lower[:, 1] * nz + lower[:, 2]
    return (first[:, None] + torch.tensor([i * ny * nz + j * nz + k for i in (0, 1) for j in (0, 1)
                                           for k in (0, 1)])).view(-1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=45)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    add_machine_options(parser, threads=2)
    args = parser.parse_args()
    threads = begin(args)
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(args.size,) * 3 + (args.features,)).astype(np.float32)
    points = rng.uniform(-1, args.size, size=(args.points, 3)).astype(np.float32)
    vol_t, pts_t = torch.from_numpy(volume), torch.from_numpy(points)

    channels = np.ascontiguousarray(volume.transpose(3, 0, 1, 2))  # scipy's best layout: one array per channel
    coordinates = np.ascontiguousarray(points.T, dtype=np.float64)

    def scipy():
        return np.stack([map_coordinates(c, coordinates, order=1, mode="grid-constant", cval=0.0)
                         for c in channels], 1)

    corner_bytes = torch.randn(8 * args.points, args.features)
    copy = torch.empty_like(corner_bytes)
    corner_rows = corner_rows_of(vol_t, pts_t)
    candidates = {
        "dwiml trilinear": lambda: trilinear(vol_t, pts_t),
        "floor: copy of 8 x points x features": lambda: copy.copy_(corner_bytes),
        "gather of the 8 corner rows": lambda: torch.index_select(vol_t.view(-1, args.features), 0, corner_rows,
                                                                  out=copy),
        "grid_sample channels_last_3d": lambda: grid_sample(vol_t, pts_t, 1),
        "grid_sample channels_last_3d, batch 2": lambda: grid_sample(vol_t, pts_t, 2),
    }
    compared = [name for name in candidates if not name.startswith(("floor", "gather"))]
    expected = scipy()
    scale = np.abs(expected).max()
    errors = {name: np.abs(candidates[name]().numpy() - expected).max() / scale for name in compared}
    candidates["scipy map_coordinates (per channel)"] = scipy
    errors["scipy map_coordinates (per channel)"] = 0.0
    times = median_seconds_each(candidates, args.repeats)

    print(f"{args.points} points, {args.features} float32 channels, {args.size}^3 volume, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    ours = times["dwiml trilinear"]
    for name, seconds in times.items():
        error = f"max |diff to scipy| / max |scipy| {errors[name]:.1e}" if name in errors else ""
        print(f"{name:38s} {seconds:7.3f} s   time / dwiml {seconds / ours:5.2f}   {error}")
    best_grid = min(v for k, v in times.items() if k.startswith("grid_sample"))
    print(f"scipy / dwiml {times['scipy map_coordinates (per channel)'] / ours:.2f} (target >= 5); "
          f"best grid_sample / dwiml {best_grid / ours:.2f} (target >= 1)")
    print(f"dwiml / floor {ours / times['floor: copy of 8 x points x features']:.2f} (target <= 2); "
          f"dwiml / gather of the corner rows {ours / times['gather of the 8 corner rows']:.2f}")
    finish(args, threads)


if __name__ == "__main__":
    main()
