"""Trilinear interpolation speed: dwiml against scipy's map_coordinates and torch's grid_sample.

Prints medians measured side by side in one run, and the ratios. Usage:
    python bench/interpolation.py [--points 1000000] [--features 45] [--size 100]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from scipy.ndimage import map_coordinates

from dwiml.data.interpolation import trilinear


def median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=45)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(args.size,) * 3 + (args.features,)).astype(np.float32)
    points = rng.uniform(0, args.size - 1, size=(args.points, 3)).astype(np.float32)
    vol_t, pts_t = torch.from_numpy(volume), torch.from_numpy(points)

    # grid_sample: channels-first (1, F, X, Y, Z) volume, grid in (z, y, x) order scaled to [-1, 1].
    vol_cf = vol_t.permute(3, 0, 1, 2)[None].contiguous(memory_format=torch.channels_last_3d)
    grid = (pts_t.flip(1) / (args.size - 1) * 2 - 1)[None, None, None]

    def grid_sample():
        return torch.nn.functional.grid_sample(vol_cf, grid, align_corners=True)[0, :, 0, 0].T

    def scipy():
        return np.stack([map_coordinates(volume[..., f], points.T, order=1) for f in range(args.features)], 1)

    ours = trilinear(vol_t, pts_t).numpy()
    assert np.allclose(ours, scipy(), atol=1e-4) and np.allclose(ours, grid_sample().numpy(), atol=1e-4)
    t_ours = median_seconds(lambda: trilinear(vol_t, pts_t), args.repeats)
    t_scipy = median_seconds(scipy, args.repeats)
    t_grid = median_seconds(grid_sample, args.repeats)
    print(f"{args.points} points, {args.features} features, {args.size}^3 volume, "
          f"{torch.get_num_threads()} threads (median of {args.repeats})")
    print(f"dwiml trilinear         {t_ours:8.3f} s")
    print(f"scipy map_coordinates   {t_scipy:8.3f} s   ratio scipy/dwiml {t_scipy / t_ours:5.2f}")
    print(f"torch grid_sample (cl3d){t_grid:8.3f} s   ratio grid_sample/dwiml {t_grid / t_ours:5.2f}")


if __name__ == "__main__":
    main()
