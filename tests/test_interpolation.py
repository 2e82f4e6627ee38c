import numpy as np
import pytest
import torch
from scipy.ndimage import map_coordinates

from dwiml.data.interpolation import BLOCK_POINTS, inside_mask, trilinear


def scipy_trilinear(volume: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The reference: scipy, one channel at a time, zeros outside."""
    return np.stack([map_coordinates(volume[..., f], points.T, order=1, mode="grid-constant", cval=0.0)
                     for f in range(volume.shape[-1])], axis=1)


@pytest.mark.parametrize("shape", [(9, 7, 5), (1, 6, 4), (5, 1, 3), (4, 3, 1)])
def test_trilinear_equals_map_coordinates_on_random_points(shape):
    rng = np.random.default_rng(3)
    volume = rng.normal(size=shape + (6,))
    points = rng.uniform(-1.5, np.array(shape) + 0.5, size=(2000, 3))
    expected = scipy_trilinear(volume, points)
    ours = trilinear(torch.from_numpy(volume), torch.from_numpy(points)).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-10)
    float32 = trilinear(torch.from_numpy(volume).float(), torch.from_numpy(points).float()).numpy()
    np.testing.assert_allclose(float32, expected, atol=1e-5)


def test_float32_is_within_1e_5_of_scipy_relative_to_the_values():
    rng = np.random.default_rng(4)
    volume = rng.normal(size=(40, 30, 20, 5)).astype(np.float32)
    points = rng.uniform(-1, [40, 30, 20], size=(5000, 3)).astype(np.float32)
    expected = scipy_trilinear(volume, points.astype(np.float64))
    ours = trilinear(torch.from_numpy(volume), torch.from_numpy(points)).numpy()
    assert np.abs(ours - expected).max() <= 1e-5 * np.abs(expected).max()


def test_points_far_outside_get_zeros_and_mask():
    volume = torch.ones(4, 4, 4, 2)
    points = torch.tensor([[1.0, 1.0, 1.0], [-3.0, 1.0, 1.0], [1.0, 9.0, 1.0], [3.4, 3.4, 3.4]])
    out = trilinear(volume, points)
    assert out[0].tolist() == [1.0, 1.0] and out[1].tolist() == [0.0, 0.0] and out[2].tolist() == [0.0, 0.0]
    assert inside_mask(points, volume.shape).tolist() == [True, False, False, True]


def test_points_beyond_one_block_equal_map_coordinates():
    """More points than one block (the blocked path) give scipy's values too."""
    rng = np.random.default_rng(5)
    volume = rng.normal(size=(6, 5, 4, 3))
    points = rng.uniform(-1, 6, size=(BLOCK_POINTS + 1234, 3))
    ours = trilinear(torch.from_numpy(volume), torch.from_numpy(points)).numpy()
    np.testing.assert_allclose(ours, scipy_trilinear(volume, points), atol=1e-10)
