"""dwiml-visualize-loss for viewers: an RGB colour per point from a colormap and a range, the best and
worst streamlines by mean loss, streamlines from any tractogram file, a log-scale histogram."""
from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from dipy.io.stateful_tractogram import Origin, Space, StatefulTractogram
from dipy.io.streamline import load_tractogram, save_tractogram
from matplotlib import colormaps

from helpers import run_training
from dwiml.cli import visualize_loss as loss_cli
from dwiml.data.dataset import MultiSubjectDataset
from dwiml.data.hdf5 import read_subject_list
from dwiml.data.builtin import phantom_hdf5

FAST = ["trainer.max_epochs=1", "trainer.max_batches_per_epoch_training=3", "trainer.max_batches_per_epoch_validation=1"]


@pytest.fixture(scope="module")
def trained(cache_dir, tmp_path_factory):
    """A model folder, the phantom's HDF5 and its testing subject's name and folder."""
    run = tmp_path_factory.mktemp("run")
    run_training(cache_dir, run, FAST)
    root = phantom_hdf5(cache_dir, nb_subjects=3).parent  # the fixture's draw (other tests add draws)
    name = read_subject_list(root / "subjects" / "testing_subjects.txt")[0]
    return run / "best_model", root / "phantom.hdf5", name, root / "subjects" / name


def visualize(trained, out, *options):
    model, hdf5, name, _ = trained
    loss_cli.main([str(model), str(out), "--hdf5", str(hdf5), "--subject", name, *map(str, options)])
    return load_tractogram(str(out), "same", bbox_valid_check=False)


def test_colours_are_the_colormap_of_the_loss_over_the_range(trained, tmp_path):
    sft = visualize(trained, tmp_path / "loss.trk", "--colormap", "plasma", "--range", 0.2, 0.9)
    loss = np.concatenate([v[:, 0] for v in sft.data_per_point["loss"]])
    color = np.concatenate(list(sft.data_per_point["color"]))
    finite = np.isfinite(loss)
    assert finite.mean() > 0.9 and (loss[finite] < 0.2).any() and (loss[finite] > 0.9).any()
    expected = colormaps["plasma"](np.clip((loss[finite] - 0.2) / 0.7, 0, 1))[:, :3] * 255
    np.testing.assert_allclose(color[finite], expected, atol=1.0)  # within one 8-bit step of the colormap's LUT
    grey = 255 * np.array(matplotlib.colors.to_rgb("grey"))
    np.testing.assert_allclose(color[~finite], np.broadcast_to(grey, color[~finite].shape), atol=0.01)


def test_best_and_worst_are_the_streamlines_of_lowest_and_highest_mean_loss(trained, tmp_path):
    sft = visualize(trained, tmp_path / "loss.trk", "--select-pct", 10)
    means = sorted(float(np.nanmean(v)) for v in sft.data_per_point["loss"])
    k = round(len(means) * 0.1)
    for name, expected in (("best", means[:k]), ("worst", means[-k:])):
        part = load_tractogram(str(tmp_path / f"loss_{name}.trk"), "same", bbox_valid_check=False)
        assert sorted(float(np.nanmean(v)) for v in part.data_per_point["loss"]) == pytest.approx(expected)


def test_a_tck_file_gives_the_losses_of_the_same_streamlines_from_the_hdf5(trained, tmp_path):
    model, hdf5, name, folder = trained
    from_hdf5 = visualize(trained, tmp_path / "hdf5.trk")
    subset = next(s for s in ("training", "validation", "testing")
                  if name in MultiSubjectDataset(hdf5).subset(s).subjects)
    assert subset == "testing"
    bundles = [load_tractogram(str(p), str(folder / "wm_mask.nii.gz")) for p in sorted((folder / "bundles").glob("*.trk"))]
    merged = StatefulTractogram([s for b in bundles for s in b.streamlines], bundles[0], bundles[0].space,
                                origin=bundles[0].origin)
    save_tractogram(merged, str(tmp_path / "bundles.tck"))
    from_tck = visualize(trained, tmp_path / "tck.trx", "--tractogram", tmp_path / "bundles.tck")
    assert len(from_tck) == len(from_hdf5)
    for a, b in zip(from_tck.data_per_point["loss"], from_hdf5.data_per_point["loss"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert (tmp_path / "tck.png").stat().st_size > 10_000


def test_a_tractogram_on_another_grid_is_refused(trained, tmp_path):
    model, hdf5, name, folder = trained
    other = StatefulTractogram([np.array([[1.0, 1, 1], [2, 2, 2]])], (np.diag([3.0, 3, 3, 1]), (5, 5, 5),
                               (3.0, 3, 3), "RAS"), Space.VOX, origin=Origin.NIFTI)
    save_tractogram(other, str(tmp_path / "other.trk"), bbox_valid_check=False)
    with pytest.raises(SystemExit) as e:
        visualize(trained, tmp_path / "x.trk", "--tractogram", tmp_path / "other.trk")
    assert str(e.value.code).startswith(f"dwiml-visualize-loss: error: {tmp_path / 'other.trk'}: not a tractogram "
                                        "on the subject's grid")
    assert not (tmp_path / "x.trk").exists()
