"""Seeds and stopping rules against direct numpy/scipy/dipy computations."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from dipy.tracking.streamlinespeed import length
from scipy.ndimage import map_coordinates

from dwiml.errors import DwimlError
from dwiml.tracking.seeds import seeds_in_mask
from dwiml.tracking.stopping import (
    Stop,
    angle_ok,
    in_tracking_mask,
    length_in_range,
    mask_values,
    stop_reasons,
    within_max_length,
)
from helpers import random_streamlines


@pytest.fixture
def mask() -> torch.Tensor:
    mask = torch.zeros(7, 6, 5, dtype=torch.uint8)
    mask[1:3, 2, 1] = 1
    mask[5, 4, 3] = 1
    return mask


def voxel_of(points: torch.Tensor) -> np.ndarray:
    """Voxel containing each point: the voxel (i, j, k) spans [i - 0.5, i + 0.5)."""
    return np.floor(points.numpy().astype(np.float64) + 0.5).astype(int)


def test_seeds_per_voxel_counts_and_positions(mask):
    seeds = seeds_in_mask(mask, seeds_per_voxel=4, rng_seed=3)
    assert seeds.shape == (12, 3) and seeds.dtype == torch.float32
    voxels = voxel_of(seeds)
    assert mask.numpy()[tuple(voxels.T)].all()
    counted = {tuple(v): n for v, n in zip(*np.unique(voxels, axis=0, return_counts=True))}
    assert counted == {(1, 2, 1): 4, (2, 2, 1): 4, (5, 4, 3): 4}
    # spread inside each voxel, not at its centre
    offsets = seeds.numpy() - voxels
    assert np.abs(offsets).max() < 0.5 and offsets.std() > 0.15


def test_total_number_of_seeds_is_uniform_over_the_mask(mask):
    seeds = seeds_in_mask(mask, nb_seeds=3000, rng_seed=0)
    voxels = voxel_of(seeds)
    assert len(seeds) == 3000 and mask.numpy()[tuple(voxels.T)].all()
    _, counts = np.unique(voxels, axis=0, return_counts=True)
    assert len(counts) == 3 and np.abs(counts / 3000 - 1 / 3).max() < 0.04
    # positions inside voxels uniform: the mean offset is near 0 and the variance near 1/12
    offsets = seeds.numpy() - voxels
    assert np.abs(offsets.mean(axis=0)).max() < 0.03
    np.testing.assert_allclose(offsets.var(axis=0), 1 / 12, rtol=0.1)


def test_seeds_reproducible_under_a_seed(mask):
    first = seeds_in_mask(mask, nb_seeds=50, rng_seed=11)
    assert torch.equal(first, seeds_in_mask(mask, nb_seeds=50, rng_seed=11))
    assert not torch.equal(first, seeds_in_mask(mask, nb_seeds=50, rng_seed=12))
    assert len(seeds_in_mask(mask)) == 3  # default: one seed per voxel


def test_seeds_bad_input(mask):
    with pytest.raises(DwimlError, match="no voxel"):
        seeds_in_mask(torch.zeros(3, 3, 3))
    with pytest.raises(DwimlError, match="not both"):
        seeds_in_mask(mask, seeds_per_voxel=1, nb_seeds=3)
    with pytest.raises(DwimlError, match=">= 1"):
        seeds_in_mask(mask, nb_seeds=0)


def test_mask_values_nearest_and_trilinear_match_scipy():
    rng = np.random.default_rng(0)
    volume = rng.random((6, 5, 4))
    points = rng.uniform(-0.49, np.array(volume.shape) - 0.51, (500, 3))
    torch_points = torch.from_numpy(points)
    torch_volume = torch.from_numpy(volume)
    nearest = mask_values(torch_volume, torch_points, "nearest").numpy()
    np.testing.assert_allclose(nearest, map_coordinates(volume, points.T, order=0, mode="nearest"))
    trilinear = mask_values(torch_volume, torch_points, "trilinear").numpy()
    expected = map_coordinates(volume, points.T, order=1, mode="grid-constant", cval=0.0)
    np.testing.assert_allclose(trilinear, expected, atol=1e-6)
    outside = torch.tensor([[-0.6, 1.0, 1.0], [1.0, 4.5, 1.0], [1.0, 1.0, 3.5]], dtype=torch.float64)
    assert (mask_values(torch.ones(6, 5, 4, dtype=torch.float64), outside, "nearest") == 0).all()
    assert (mask_values(torch.ones(6, 5, 4, dtype=torch.float64), outside, "trilinear") == 0).all()


def test_in_tracking_mask_threshold_is_half():
    mask = torch.zeros(4, 3, 3)
    mask[1, 1, 1] = 1.0
    # trilinear: the value falls linearly from 1 at x=1 to 0 at x=2: >= 0.5 up to x=1.5 included
    points = torch.tensor([[1.0, 1, 1], [1.4, 1, 1], [1.5, 1, 1], [1.6, 1, 1], [0.5, 1, 1], [0.4, 1, 1]])
    assert in_tracking_mask(mask, points, "trilinear").tolist() == [True, True, True, False, True, False]
    # nearest: voxel 1 spans [0.5, 1.5)
    assert in_tracking_mask(mask, points, "nearest").tolist() == [True, True, False, False, True, False]
    with pytest.raises(ValueError, match="interpolation_mode"):
        mask_values(mask, points, "cubic")


def test_angle_ok_against_arccos():
    rng = np.random.default_rng(1)
    previous, dirs = rng.normal(size=(2, 400, 3))
    angles = np.degrees(np.arccos(np.clip((previous * dirs).sum(1) / np.linalg.norm(previous, axis=1)
                                          / np.linalg.norm(dirs, axis=1), -1, 1)))
    ok = angle_ok(torch.from_numpy(previous), torch.from_numpy(dirs), 60.0).numpy()
    np.testing.assert_array_equal(ok, angles <= 60.0)
    assert 0 < ok.sum() < len(ok)
    first = angle_ok(torch.zeros(2, 3), torch.tensor([[1.0, 0, 0], [-1.0, 0, 0]]), 10.0)
    assert first.tolist() == [True, True]
    exactly = angle_ok(torch.tensor([[1.0, 0, 0]]), torch.tensor([[0.5, np.sqrt(3) / 2, 0]]), 60.0)
    assert exactly.tolist() == [True]


def test_length_rules_against_dipy_length():
    lines = random_streamlines(np.random.default_rng(2), 30)
    points = torch.from_numpy(np.concatenate(lines))
    lengths = torch.tensor([len(s) for s in lines])
    voxel_sizes = torch.tensor([2.0, 1.0, 3.0])
    mm = np.array([length(s * voxel_sizes.numpy()) for s in lines])
    low, high = np.quantile(mm, [0.25, 0.75])
    keep = length_in_range(points, lengths, voxel_sizes, low, high).numpy()
    np.testing.assert_array_equal(keep, (mm >= low) & (mm <= high))
    assert within_max_length(torch.tensor([9.0, 10.0, 10.5]), 10.0).tolist() == [True, True, False]


def test_stop_reasons_priority():
    mask = torch.zeros(5, 5, 5)
    mask[1:4, 1:4, 1:4] = 1
    new_points = torch.tensor([[2.0, 2, 2], [2.0, 2, 2], [2.0, 2, 2], [4.0, 2, 2], [4.0, 2, 2], [2.0, 2, 2]])
    straight = torch.tensor([1.0, 0, 0])
    turned = torch.tensor([0.0, 1, 0])  # 90 degrees from straight
    previous = straight.expand(6, 3)
    dirs = torch.stack([straight, turned, straight, straight, turned, straight])
    lengths = torch.tensor([5.0, 5.0, 12.0, 5.0, 12.0, 10.0])
    reasons = stop_reasons(mask, new_points, previous, dirs, lengths, max_angle_deg=45, max_length_mm=10)
    assert reasons.tolist() == [Stop.CONTINUE, Stop.ANGLE, Stop.MAX_LENGTH, Stop.LEFT_MASK, Stop.ANGLE,
                                Stop.CONTINUE]
