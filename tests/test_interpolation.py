import numpy as np
import torch
from scipy.ndimage import map_coordinates

from dwiml.data.interpolation import inside_mask, trilinear


def test_trilinear_equals_map_coordinates_on_random_points():
    rng = np.random.default_rng(3)
    volume = rng.normal(size=(9, 7, 5, 6))
    points = rng.uniform(-1.5, np.array([9, 7, 5]) + 0.5, size=(2000, 3))
    expected = np.stack([map_coordinates(volume[..., f], points.T, order=1, mode="grid-constant", cval=0.0)
                         for f in range(volume.shape[-1])], axis=1)
    ours = trilinear(torch.from_numpy(volume), torch.from_numpy(points)).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-10)
    float32 = trilinear(torch.from_numpy(volume).float(), torch.from_numpy(points).float()).numpy()
    np.testing.assert_allclose(float32, expected, atol=1e-5)


def test_points_far_outside_get_zeros_and_mask():
    volume = torch.ones(4, 4, 4, 2)
    points = torch.tensor([[1.0, 1.0, 1.0], [-3.0, 1.0, 1.0], [1.0, 9.0, 1.0], [3.4, 3.4, 3.4]])
    out = trilinear(volume, points)
    assert out[0].tolist() == [1.0, 1.0] and out[1].tolist() == [0.0, 0.0] and out[2].tolist() == [0.0, 0.0]
    assert inside_mask(points, volume.shape).tolist() == [True, False, False, True]
