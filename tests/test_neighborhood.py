"""Neighbourhoods against closed forms and scipy, on the real tiny HDF5 (anisotropic voxels)."""
import json

import numpy as np
import pytest
import torch
from scipy.ndimage import map_coordinates

from dwiml.data import neighborhood
from dwiml.data.dataset import MultiSubjectDataset
from dwiml.data.loader import Batch
from dwiml.data.neighborhood import Neighborhood
from dwiml.errors import DwimlError
from dwiml.training.steps import OneInputStep
from helpers import run_training


@pytest.mark.parametrize("r", [1, 2])
def test_axes_has_6r_plus_1_points_and_grid_2r_plus_1_cubed(r):
    for kind, count in (("axes", 6 * r + 1), ("grid", (2 * r + 1) ** 3)):
        shape = Neighborhood(kind, 3.0, r)
        offsets = shape.offsets_mm().numpy()
        assert len(shape) == count and offsets.shape == (count, 3)
        assert np.array_equal(offsets[0], [0, 0, 0]) and len(np.unique(offsets, axis=0)) == count
        assert np.abs(offsets).max() == 3.0
        steps = np.arange(-r, r + 1) * 3.0 / r
        assert np.isin(offsets, steps).all()
        if kind == "axes":
            assert ((offsets != 0).sum(axis=1)[1:] == 1).all()
    assert len(Neighborhood()) == 1


def test_offsets_are_the_radius_in_mm_on_each_axis_for_anisotropic_voxels():
    voxel_sizes = torch.tensor([1.5, 2.0, 2.5])
    vox = Neighborhood("axes", 3.0).offsets_vox(voxel_sizes).numpy()
    expected = [[0, 0, 0], [-2, 0, 0], [2, 0, 0], [0, -1.5, 0], [0, 1.5, 0], [0, 0, -1.2], [0, 0, 1.2]]
    np.testing.assert_allclose(vox, expected)
    grid = Neighborhood("grid", 3.0).offsets_vox(voxel_sizes).numpy()
    np.testing.assert_allclose(np.abs(grid).max(axis=0), [2.0, 1.5, 1.2])


def scipy_at(volume: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.stack([map_coordinates(volume[..., f], points.T, order=1, mode="grid-constant", cval=0.0)
                     for f in range(volume.shape[-1])], axis=1)


@pytest.mark.parametrize("kind", ["axes", "grid"])
def test_interpolated_neighbours_equal_scipy_at_the_shifted_points(hdf5_path, kind):
    subset = MultiSubjectDataset(hdf5_path).training
    volume, voxel_sizes = subset.volume(0, "input"), subset.voxel_sizes(0, "input")
    points = np.random.default_rng(0).uniform(-0.5, np.array(volume.shape[:3]) - 0.5, size=(300, 3))
    shape = Neighborhood(kind, 2.0)
    ours = neighborhood.interpolate(torch.from_numpy(volume), torch.from_numpy(points),
                                    shape.offsets_vox(torch.from_numpy(voxel_sizes))).numpy()
    offsets_vox = shape.offsets_mm().numpy() / voxel_sizes
    expected = np.concatenate([scipy_at(volume, points + o) for o in offsets_vox], axis=1)
    assert ours.shape == (300, len(shape) * volume.shape[-1])
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_neighbours_outside_get_zeros_and_a_false_mask():
    volume = torch.ones(5, 5, 5, 2)
    offsets = Neighborhood("axes", 2.0).offsets_vox(torch.ones(3))
    points = torch.tensor([[2.0, 2.0, 2.0], [0.0, 2.0, 2.0]])
    values = neighborhood.interpolate(volume, points, offsets).view(2, 7, 2)
    mask = neighborhood.inside_mask(points, offsets, volume.shape)
    assert mask[0].all() and (values[0] == 1).all()
    assert mask[1].tolist() == [True, False, True, True, True, True, True]
    assert (values[1, 1] == 0).all() and (values[1, [0, 2, 3, 4, 5, 6]] == 1).all()


def test_bad_neighborhood_options_name_the_key():
    with pytest.raises(DwimlError, match="neighborhood_type: 'ball'"):
        Neighborhood("ball", 1.0)
    with pytest.raises(DwimlError, match="neighborhood_radius_mm: None must be > 0"):
        Neighborhood("axes")
    with pytest.raises(DwimlError, match="neighborhood_radius_mm: 1.0 is set but neighborhood_type is none"):
        Neighborhood("none", 1.0)
    with pytest.raises(DwimlError, match="neighborhood_nb_rings: 0"):
        Neighborhood("grid", 1.0, 0)


def test_step_input_size_and_values_follow_the_neighborhood(hdf5_path):
    dataset = MultiSubjectDataset(hdf5_path)
    step = OneInputStep(dataset, "input", neighborhood_type="axes", neighborhood_radius_mm=1.0)
    nb_features = dataset.nb_features("input")
    assert step.input_size == 7 * nb_features
    points = torch.tensor([[3.0, 4.0, 2.0], [5.5, 1.2, 3.3], [0.0, 0.0, 0.0]])
    subjects = torch.tensor([0, 1, 1])
    batch = Batch(points, points, torch.tensor([1, 2]), torch.tensor([0, 1]), "training")
    inputs = step.interpolate(batch, points, subjects).numpy()
    for i, subject in enumerate(subjects.tolist()):
        volume, voxel_sizes = dataset.training.volume(subject, "input"), dataset.training.voxel_sizes(subject, "input")
        offsets = Neighborhood("axes", 1.0).offsets_mm().numpy() / voxel_sizes
        expected = scipy_at(volume, points[i].numpy() + offsets).reshape(-1)
        np.testing.assert_allclose(inputs[i], expected, atol=1e-5)


def test_training_with_a_grid_neighborhood_sets_the_model_input_size(hdf5_path, tmp_path):
    run_training(tmp_path, tmp_path / "run", [
        "dataset=hdf5", f"dataset.hdf5_path={hdf5_path}", "step.neighborhood_type=grid",
        "step.neighborhood_radius_mm=1.5", "trainer.max_epochs=1", "sampler.batch_size=10"])
    config = json.loads((tmp_path / "run" / "best_model" / "model_config.json").read_text())
    assert config["input_size"] == 27 * MultiSubjectDataset(hdf5_path).nb_features("input")


def test_loader_option_errors_stop_a_run(hdf5_path, tmp_path):
    with pytest.raises(DwimlError, match="step_size_mm=1.0 and nb_points=20 are set together"):
        run_training(tmp_path, tmp_path / "run", ["dataset=hdf5", f"dataset.hdf5_path={hdf5_path}",
                                                   "loader.nb_points=20"])
