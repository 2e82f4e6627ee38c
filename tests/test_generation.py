"""The generation-validation phase: logged on its epochs only, monitorable, continuing the true
streamlines exactly as the model predicts, with metrics equal to an independent computation
from the phantom's files (NIfTI labels, connectivity.npy, bundles .trk read with dipy)."""
from __future__ import annotations

import csv
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from dipy.io.streamline import load_tractogram

from helpers import compose_run, metrics, run_training
from dwiml.data.connectivity import NO_REGION, ConnectivityReference
from dwiml.data.dataset import MultiSubjectDataset
from dwiml.data.hdf5 import read_subject_list
from dwiml.data.input_spec import Resampling
from dwiml.data.interpolation import trilinear
from dwiml.errors import DwimlError
from dwiml.evaluation.generation import GenerationValidation
from dwiml.models.io import load_model
from dwiml.training.checkpoint import load_checkpoint
from dwiml.training.run import build_trainer
from dwiml.training.steps import OneInputStep
from dwiml.viz.plots import read_metrics
from dwiml.data.builtin import phantom_hdf5

FAST = ["trainer.max_batches_per_epoch_training=12", "trainer.max_batches_per_epoch_validation=1"]
GV = ["gv=default", "gv.tracking_mask=wm_mask", "gv.max_streamlines_per_subject=40"]


@pytest.fixture(scope="module")
def run_dir(cache_dir, tmp_path_factory):
    """Three epochs, the phase every second one, the best model chosen on a gv metric."""
    folder = tmp_path_factory.mktemp("gv-run")
    run_training(cache_dir, folder, [*FAST, *GV, "gv.every_n_epochs=2", "gv.endpoint_tolerance_mm=2",
                                     "gv.subsets=[training,validation]",
                                     "trainer.max_epochs=3", "trainer.monitor=gv_final_distance_mm",
                                     "trainer.patience=null"])
    return folder


@pytest.fixture(scope="module")
def validation(cache_dir):
    """The phantom's HDF5 and its validation subject's folder of files."""
    root = phantom_hdf5(cache_dir, nb_subjects=3).parent  # the fixture's draw (other tests add draws)
    name = read_subject_list(root / "subjects" / "validation_subjects.txt")[0]
    return root / "phantom.hdf5", root / "subjects" / name


@pytest.mark.slow
def test_metrics_logged_on_the_chosen_epochs_only_and_monitored(run_dir):
    with open(run_dir / "gv_metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["2"]
    names = {"final_distance_mm", "reached_end", "connectivity_fp_rate", "valid_pct", "invalid_pct",
             "no_connection_pct", "mean_overlap", "mean_overreach", "mean_f1"}
    assert set(rows[0]) == {"epoch", "gv_seconds", *(f"gv_{n}" for n in names), *(f"gv_training_{n}" for n in names)}
    assert all(math.isfinite(float(v)) for v in rows[0].values())
    epochs = metrics(run_dir)
    assert [row["epoch"] for row in epochs] == ["1", "2", "3"]
    assert not any(key.startswith("gv_") for key in epochs[0])
    stopping = load_checkpoint(run_dir)["early_stopping"]
    assert stopping["best_epoch"] == 2 and stopping["best"] == pytest.approx(float(rows[0]["gv_final_distance_mm"]))
    assert (run_dir / "best_model").is_dir()
    curves = read_metrics(run_dir)
    distance = curves["gv_final_distance_mm"]
    assert np.isnan(distance[[0, 2]]).all() and distance[1] == pytest.approx(float(rows[0]["gv_final_distance_mm"]))
    assert (run_dir / "plots" / "metrics.png").is_file()


@pytest.fixture(scope="module")
def transformer_dir(cache_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gv-transformer")
    run_training(cache_dir, folder, [*FAST, "model=transformer", "trainer.max_epochs=1"])
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("model_run", ["run_dir", "transformer_dir"])
def test_continuation_starts_with_the_prefix_and_follows_the_models_forward_pass(model_run, validation, request):
    model, spec = load_model(request.getfixturevalue(model_run) / "best_model", "cpu")
    gv = GenerationValidation(MultiSubjectDataset(validation[0]), spec, tracking_mask="wm_mask",
                              nb_init_points=3, max_angle_deg=120, max_streamlines_per_subject=30)
    (tracked,) = gv.track(model)
    prefixes = gv.subjects[0].prefixes  # (k, B, 3)
    points, lengths = tracked.points, tracked.lengths
    assert len(lengths) == prefixes.shape[1] == 30 and (lengths >= 3).all()
    starts = torch.cumsum(lengths, 0) - lengths
    for j in range(3):
        torch.testing.assert_close(points[starts + j], prefixes[j], rtol=0, atol=0)
    # Each generated step goes where the packed forward pass over the whole streamline points:
    # the state built on the prefix is the one the model would have had.
    volume = torch.from_numpy(gv.subjects[0].subset.volume(0, "input"))
    last = torch.zeros(len(points), dtype=torch.bool)
    last[starts + lengths - 1] = True
    segments = torch.zeros_like(points)
    segments[:-1] = points[1:] - points[:-1]
    segments[last] = 0
    with torch.no_grad():
        predicted = model.head.direction(model(trilinear(volume, points), lengths, segments))
    local = torch.arange(len(points)) - torch.repeat_interleave(starts, lengths)
    generated = ~last & (local >= 2)
    assert generated.sum() > 50
    cos = torch.nn.functional.cosine_similarity(predicted[generated], segments[generated], dim=1)
    assert cos.min() > 1 - 1e-4
    step_mm = (segments[generated] * torch.from_numpy(gv.subjects[0].subset.voxel_sizes(0, "input")).float()).norm(dim=1)
    torch.testing.assert_close(step_mm, torch.full_like(step_mm, 1.0), rtol=0, atol=1e-4)


@pytest.mark.slow
def test_metrics_equal_an_independent_computation_from_the_files(run_dir, validation):
    hdf5, folder = validation
    model, spec = load_model(run_dir / "best_model", "cpu")
    gv = GenerationValidation(MultiSubjectDataset(hdf5), spec, tracking_mask="wm_mask", max_angle_deg=60,
                              nb_init_points=25, max_streamlines_per_subject=60, end_radius_mm=8.0,
                              endpoint_tolerance_mm=2.0)
    tracked = gv.track(model)
    computed = gv.metrics(tracked)

    labels_img = nib.load(folder / "endpoints_labels.nii.gz")
    labels, affine = np.asarray(labels_img.dataobj).astype(int), labels_img.affine
    assert np.allclose(np.abs(affine[:3, :3]), 2.0 * np.eye(3))  # 2 mm voxels: 2 mm reach the 6 face neighbours
    padded = np.pad(labels, 1)
    neighbours = np.stack([np.roll(padded, shift, axis)[1:-1, 1:-1, 1:-1] for axis in range(3) for shift in (1, -1)])
    labels = np.where(labels > 0, labels, neighbours.max(axis=0))
    matrix = np.load(folder / "connectivity.npy")
    bundles = []
    for trk in sorted((folder / "bundles").glob("*.trk")):
        sft = load_tractogram(str(trk), labels_img)
        sft.to_vox()
        sft.to_center()
        bundles.append(list(sft.streamlines))
    true_lines = [s for bundle in bundles for s in bundle]

    def label(p):
        return int(labels[tuple(np.rint(p).astype(int))])

    bundle_pairs = set()
    for bundle in bundles:
        pairs = [tuple(sorted((label(s[0]), label(s[-1])))) for s in bundle]
        bundle_pairs.add(max(set(pairs), key=pairs.count))
    distances, valid, invalid, no_connection, false_positive = [], 0, 0, 0, 0
    for line in tracked[0].as_list():  # one streamline at a time: the test, not the code under test
        line = line.numpy().astype(np.float64)
        (true,) = [t for t in true_lines if np.abs(t[0] - line[0]).max() < 1e-4]  # the prefix keeps the first point
        distances.append(np.linalg.norm(nib.affines.apply_affine(affine, line[-1])
                                        - nib.affines.apply_affine(affine, true[-1])))
        a, b = sorted((label(line[0]), label(line[-1])))
        if a == 0:
            no_connection += 1
        elif (a, b) in bundle_pairs:
            valid += 1
        else:
            invalid += 1
        false_positive += a > 0 and matrix[a - 1, b - 1] == 0
    n, reached = len(distances), np.array(distances) <= 8.0
    assert n == gv.subjects[0].prefixes.shape[1] > 20
    expected = {"gv_final_distance_mm": np.mean(distances), "gv_reached_end": reached.mean(),
                "gv_connectivity_fp_rate": false_positive / n, "gv_valid_pct": 100 * valid / n,
                "gv_invalid_pct": 100 * invalid / n, "gv_no_connection_pct": 100 * no_connection / n}
    for key, value in expected.items():
        assert computed[key] == pytest.approx(value, abs=1e-6), key
    assert 0 < valid < n and 0 < reached.sum() < n  # a barely trained model: both outcomes are checked


def test_scores_only_with_few_enough_bundles(validation):
    dataset = MultiSubjectDataset(validation[0])
    spec = OneInputStep(dataset, "input").input_spec("streamlines", Resampling(step_size_mm=1.0))
    scored = GenerationValidation(dataset, spec, max_streamlines_per_subject=5)
    unscored = GenerationValidation(dataset, spec, max_streamlines_per_subject=5, max_scored_bundles=2)
    assert len(scored.subjects[0].truth.names) == 9  # the phantom's nine bundles
    assert "gv_valid_pct" in scored.columns and "gv_valid_pct" not in unscored.columns
    assert "gv_connectivity_fp_rate" in unscored.columns


def test_training_subjects_get_their_own_columns_and_validation_ones_are_unchanged(run_dir, validation):
    """gv.subsets=[training, validation]: the validation metrics are those of a validation-only phase
    (the same streamlines), the training subject's come under gv_training_* and differ."""
    model, spec = load_model(run_dir / "best_model", "cpu")
    dataset = MultiSubjectDataset(validation[0])
    options = {"tracking_mask": "wm_mask", "max_streamlines_per_subject": 40, "endpoint_tolerance_mm": 2.0}
    both = GenerationValidation(dataset, spec, subsets=["training", "validation"], **options)
    alone = GenerationValidation(dataset, spec, **options)
    assert [s.subset.name for s in both.subjects] == ["training", "validation"]
    assert [s.subset.subjects[s.index] for s in both.subjects] == [dataset.training.subjects[0],
                                                                    dataset.validation.subjects[0]]
    metrics, reference = both.metrics(both.track(model)), alone.metrics(alone.track(model))
    for name, value in reference.items():
        assert metrics[name] == pytest.approx(value), name
        assert math.isfinite(metrics[name.replace("gv_", "gv_training_")])
    assert any(metrics[n] != metrics[n.replace("gv_", "gv_training_")] for n in reference)
    for subsets in (["testing"], ["validation", "validation"], []):
        with pytest.raises(DwimlError, match="gv.subsets"):
            GenerationValidation(dataset, spec, subsets=subsets)


def test_blocs_regions_and_false_positives():
    reference = ConnectivityReference(matrix=np.eye(8, dtype=int), shape=(4, 6, 2), nb_blocs=(2, 3, 1))
    points = np.array([[0, 0, 0], [3.4, 0, 1], [3.4, 5, 0], [1.4, 2.2, 0.6], [-1, 0, 0], [0, 6.2, 0]])
    # bloc (i, j, k) = (x * 2 // 4, y * 3 // 6, 0), numbered i * 3 + j
    np.testing.assert_array_equal(reference.regions(points), [0, 3, 5, 1, NO_REGION, NO_REGION])
    # streamlines 0->0 and 3->3 are connections of the (identity) matrix; 0->3 is not; an end outside is none
    first, last = points[[0, 1, 0, 4]], points[[0, 1, 1, 0]]
    assert reference.false_positive_rate(first, last) == pytest.approx(1 / 4)


def test_bad_configurations_are_refused_by_name(cache_dir, tmp_path):
    with pytest.raises(DwimlError, match=r"trainer.monitor='gv_valid_pct'.*gv=default"):
        build_trainer(compose_run(cache_dir, tmp_path, ["trainer.monitor=gv_valid_pct"]), tmp_path)
    with pytest.raises(DwimlError, match="needs step=one_input"):
        build_trainer(compose_run(cache_dir, tmp_path, ["gv=default", "step=streamlines", "model=autoencoder",
                                                        "loader.step_size_mm=null", "loader.nb_points=16"]), tmp_path)
    with pytest.raises(DwimlError, match="no volume group 'nope'"):
        build_trainer(compose_run(cache_dir, tmp_path, [*GV, "gv.tracking_mask=nope"]), tmp_path)
    with pytest.raises(DwimlError, match="gv.step_size_mm is null"):
        build_trainer(compose_run(cache_dir, tmp_path, ["gv=default", "loader.step_size_mm=null",
                                                        "loader.nb_points=16"]), tmp_path)
