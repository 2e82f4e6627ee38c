"""Tracking with a model trained for a few batches on the phantom: rules, reproducibility,
agreement with the model's packed forward pass, and the dwiml-track / dwiml-visualize-loss CLIs."""
from __future__ import annotations

from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
import torch
from dipy.io.streamline import load_tractogram
from omegaconf import OmegaConf

from conftest import compose_run
from dwiml.cli import track as track_cli
from dwiml.cli import visualize_loss as loss_cli
from dwiml.data.hdf5 import read_subject_list
from dwiml.data.interpolation import trilinear
from dwiml.errors import DwimlError
from dwiml.tracking.subject import Subject, load_tracking_model, subject_from_hdf5, track_subject
from dwiml.tracking.tracker import TrackingOptions
from dwiml.training.run import train

FAST = ["trainer.max_epochs=1", "trainer.max_batches_per_epoch_training=3", "trainer.max_batches_per_epoch_validation=1"]


def trained_run(cache_dir, folder, overrides: list[str]):
    cfg = compose_run(cache_dir, folder, [*FAST, *overrides])
    (folder / ".hydra").mkdir()
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")  # as the dwiml-train command does
    train(cfg)
    return folder


@pytest.fixture(scope="module")
def run_dir(cache_dir, tmp_path_factory):
    return trained_run(cache_dir, tmp_path_factory.mktemp("run"), [])


@pytest.fixture(scope="module")
def phantom(cache_dir):
    (root,) = cache_dir.glob("phantom-*")
    name = read_subject_list(root / "subjects" / "testing_subjects.txt")[0]
    return root / "phantom.hdf5", name, root / "subjects" / name


@pytest.fixture(scope="module")
def subject(phantom) -> Subject:
    hdf5, name, folder = phantom
    return subject_from_hdf5(hdf5, name, "input", str(folder / "seeding_mask.nii.gz"), "wm_mask")


@pytest.fixture(scope="module")
def model(run_dir):
    return load_tracking_model(run_dir, "cpu")[0]


@pytest.fixture(scope="module")
def transformer(cache_dir, tmp_path_factory):
    """The encoder-decoder Transformer preset, trained for a few batches."""
    return load_tracking_model(trained_run(cache_dir, tmp_path_factory.mktemp("transformer"),
                                           ["model=transformer"]), "cpu")[0]


def streamlines_of(tracked):
    return [s.numpy().astype(np.float64) for s in tracked.as_list()]


@pytest.mark.parametrize("keep_last_point", [True, False])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_every_streamline_respects_the_rules(model, subject, bidirectional, keep_last_point):
    options = TrackingOptions(step_size_mm=0.8, max_angle_deg=25, min_length_mm=6, max_length_mm=30,
                              bidirectional=bidirectional, keep_last_point=keep_last_point, batch_size=100)
    tracked = track_subject(model, subject, options, nb_seeds=300)
    lines = streamlines_of(tracked)
    assert len(lines) > 30
    sizes = subject.voxel_sizes.numpy()
    mask = subject.tracking_mask > 0.5
    ends_outside = 0
    for line in lines:
        segments = np.diff(line, axis=0) * sizes
        np.testing.assert_allclose(np.linalg.norm(segments, axis=1), 0.8, rtol=1e-4)
        assert 6 - 1e-4 <= len(segments) * 0.8 <= 30 + 1e-4
        cos = (segments[1:] * segments[:-1]).sum(1) / np.linalg.norm(segments[1:], axis=1) / 0.8 ** 2
        assert np.all(np.degrees(np.arccos(np.clip(cos, -1, 1))) <= 25 + 1e-3)
        voxels = np.floor(line + 0.5).astype(int)
        assert np.all((voxels >= 0) & (voxels < mask.shape))
        inside = mask[tuple(voxels.T)]
        # only the end points may lie outside the mask, and only when kept
        assert inside[1:-1].all()
        ends_outside += (~inside[[0, -1]]).sum()
    assert (ends_outside > 0) == keep_last_point


@pytest.mark.parametrize("name", ["model", "transformer"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_tracking_follows_the_models_packed_forward_pass(request, name, subject, bidirectional):
    """Each step goes where the model's training-time forward pass on the stored streamline points.
    Bidirectional: from the seed on, the state rebuilt on the reversed first half is exact.
    (A wide angle lets this barely trained model continue past the seed.)"""
    model = request.getfixturevalue(name)
    options = TrackingOptions(min_length_mm=0, max_angle_deg=120, bidirectional=bidirectional, keep_last_point=False)
    tracked = track_subject(model, subject, options, nb_seeds=60)
    volume = torch.from_numpy(subject.input)
    points, lengths = tracked.points, tracked.lengths
    last = torch.zeros(len(points), dtype=torch.bool)
    last[torch.cumsum(lengths, 0) - 1] = True
    segments = torch.zeros_like(points)
    segments[:-1] = points[1:] - points[:-1]
    segments[last] = 0
    with torch.no_grad():
        predicted = model.head.direction(model(trilinear(volume, points), lengths, segments))
    seed_index = torch.cat([torch.nonzero((s - seed).norm(dim=1) < 1e-5)[:1, 0]
                            for s, seed in zip(torch.split(points, lengths.tolist()), tracked.seeds)])
    local = torch.arange(len(points)) - torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
    checked = ~last & (local >= torch.repeat_interleave(seed_index, lengths))
    assert checked.sum() > 100
    cos = torch.nn.functional.cosine_similarity(predicted[checked], segments[checked], dim=1)
    assert cos.min() > 1 - 1e-4


def test_seeds_are_stored_and_lie_on_their_streamlines(model, subject):
    for bidirectional in (True, False):
        tracked = track_subject(model, subject, TrackingOptions(min_length_mm=0, bidirectional=bidirectional),
                                nb_seeds=50)
        for line, seed in zip(tracked.as_list(), tracked.seeds):
            distances = (line - seed).norm(dim=1)
            assert distances.min() < 1e-5
            if not bidirectional:
                assert distances[0] < 1e-5


def test_deterministic_tracking_is_reproducible(model, subject):
    """Bitwise with the same batch size; with another one, float rounding of the batched matrix
    products may flip a decision right at a threshold, so nearly all streamlines agree."""
    options = TrackingOptions(min_length_mm=0)
    a, b, c = (track_subject(model, subject, replace(options, batch_size=size), seeds_per_voxel=1)
               for size in (1000, 1000, 7))
    assert torch.equal(a.points, b.points) and torch.equal(a.lengths, b.lengths)
    assert torch.equal(a.seeds, c.seeds)
    assert (a.lengths == c.lengths).float().mean() > 0.95


@pytest.mark.parametrize("name", ["model", "transformer"])
def test_bidirectional_streamlines_do_not_depend_on_the_batch(request, name, subject):
    """Tracked 100 together or each seed alone, every streamline is the same (rows are independent,
    the replay of the first halves included), and most continue on the other side of their seed."""
    model = request.getfixturevalue(name)
    options = TrackingOptions(min_length_mm=0, max_angle_deg=120, batch_size=100)
    together, alone = (track_subject(model, subject, replace(options, batch_size=size), nb_seeds=20)
                       for size in (100, 1))
    assert torch.equal(together.seeds, alone.seeds) and torch.equal(together.lengths, alone.lengths)
    torch.testing.assert_close(together.points, alone.points, atol=1e-4, rtol=0)
    seed_index = torch.stack([(line - seed).norm(dim=1).argmin() for line, seed in zip(together.as_list(),
                                                                                       together.seeds)])
    assert ((seed_index > 0) & (seed_index < together.lengths - 1)).sum() >= 10


def test_eos_threshold_needs_an_eos_output(model, subject):
    if getattr(model.head, "has_eos", False):
        pytest.skip("head has an EOS output")
    with pytest.raises(DwimlError, match="end-of-streamline"):
        track_subject(model, subject, TrackingOptions(eos_threshold=0.5), nb_seeds=5)


@pytest.mark.parametrize("suffix", [".trk", ".tck", ".trx"])
def test_cli_from_a_run_folder(run_dir, phantom, tmp_path, suffix, capsys):
    hdf5, name, folder = phantom
    out = tmp_path / f"tracked{suffix}"
    track_cli.main([str(run_dir), str(out), "--hdf5", str(hdf5), "--subject", name, "--seeding-mask",
                    str(folder / "seeding_mask.nii.gz"), "--tracking-mask", "wm_mask", "--nb-seeds", "200",
                    "--min-length-mm", "2", "--compress-mm", "0.1"])
    reference = folder / "wm_mask.nii.gz"
    sft = load_tractogram(str(out), str(reference), bbox_valid_check=True)
    assert len(sft) > 0 and sft.is_bbox_in_vox_valid()
    assert f"{len(sft)} streamlines" in capsys.readouterr().out
    if suffix != ".tck":  # TCK has no per-streamline data
        assert sft.data_per_streamline["seeds"].shape == (len(sft), 3)
    np.testing.assert_allclose(sft.affine, nib.load(reference).affine)


def test_cli_from_nifti_files_and_bad_input(run_dir, phantom, tmp_path, capsys):
    _, name, folder = phantom
    common = ["--seeding-mask", str(folder / "seeding_mask.nii.gz"), "--tracking-mask", str(folder / "wm_mask.nii.gz")]
    out = tmp_path / "t.trk"
    track_cli.main([str(run_dir / "best_model"), str(out), "--hdf5", str(phantom[0]), "--subject", name,
                    "--input-group", "input", "--nb-seeds", "20", "--min-length-mm", "0", *common])
    from_hdf5 = load_tractogram(str(out), "same")
    track_cli.main([str(run_dir), str(out), "--input", str(folder / "sh.nii.gz"), "--nb-seeds", "20",
                    "--min-length-mm", "0", *common])
    from_files = load_tractogram(str(out), "same")
    assert len(from_files) == 20  # every seed gives a streamline (no minimum length)
    for a, b in zip(from_hdf5.streamlines, from_files.streamlines):  # the same volume read two ways
        np.testing.assert_allclose(a, b, atol=1e-4)
    bad = {"no subject 'nobody'": ["--hdf5", str(phantom[0]), "--subject", "nobody"],
           "does not match the input's grid": ["--input", str(folder / "sh.nii.gz"), "--seeding-mask",
                                               str(folder / "sh.nii.gz")],
           "must end in .trk": ["--input", str(folder / "sh.nii.gz")],
           "which the model does not accept": ["--input", str(folder / "wm_mask.nii.gz")],
           "give --input-group": ["--hdf5", str(phantom[0]), "--subject", name],
           "is not a model folder": ["--input", str(folder / "sh.nii.gz")]}
    models = {"give --input-group": run_dir / "best_model", "is not a model folder": tmp_path}
    for message, args in bad.items():
        target = tmp_path / ("x.txt" if "must end" in message else "y.trk")
        with pytest.raises(SystemExit) as e:
            track_cli.main([str(models.get(message, run_dir)), str(target), *common, *args])
        assert e.value.code.startswith("dwiml-track: error:") and message in e.value.code
        assert not target.exists()


def test_visualize_loss(run_dir, phantom, tmp_path):
    hdf5, name, _ = phantom
    out = tmp_path / "loss.trk"
    loss_cli.main([str(run_dir), str(out), "--hdf5", str(hdf5), "--subject", name, "--batch-size", "50"])
    sft = load_tractogram(str(out), "same")
    losses = [v[:, 0] for v in sft.data_per_point["loss"]]
    assert all(np.isnan(v[-1]) and np.isfinite(v[:-1]).all() for v in losses)
    # the mean over points equals the training step's loss on the same (resampled, unaugmented) streamlines
    from dwiml.data.dataset import MultiSubjectDataset
    from dwiml.data.loader import BatchLoader
    from dwiml.data.sampler import BatchSpec
    from dwiml.training.steps import OneInputStep

    model, config = load_tracking_model(run_dir, "cpu")
    dataset = MultiSubjectDataset(hdf5)
    subset = next(dataset.subset(s) for s in ("training", "validation", "testing") if name in dataset.subset(s).subjects)
    index = subset.subjects.index(name)
    batch = BatchLoader(subset, "streamlines", config.loader.step_size_mm, augment=False)[
        BatchSpec((index,), (np.arange(len(sft)),), 0)]
    with torch.no_grad():
        expected, nb = OneInputStep(dataset, "input")(model.eval(), batch)
    values = np.concatenate([v[:-1] for v in losses])
    assert nb == len(values)
    np.testing.assert_allclose(values.mean(), float(expected), rtol=1e-4)
    assert out.with_suffix(".png").stat().st_size > 1000


def test_phantom_tracking_preset_composes(cache_dir, tmp_path):
    cfg = compose_run(cache_dir, tmp_path, ["experiment=phantom_tracking", "trainer.max_epochs=3"])
    assert cfg.loader.noise_gaussian_size_forward == 0.7 and cfg.model.nb_previous_dirs == 1
    assert cfg.trainer.max_epochs == 3 and cfg.step.input_group == "input"


def test_tracking_inputs_use_the_runs_neighborhood(cache_dir, tmp_path, phantom):
    """A model trained with a neighbourhood tracks with the same inputs as its training step."""
    from dwiml.config.build import build
    from dwiml.data.dataset import MultiSubjectDataset
    from dwiml.tracking.subject import step_neighborhood
    from dwiml.tracking.tracker import volume_inputs

    cfg = compose_run(cache_dir, tmp_path, ["step.neighborhood_type=axes", "step.neighborhood_radius_mm=1.5"])
    neighborhood = step_neighborhood(cfg)
    assert len(neighborhood) == 7
    hdf5, name, _ = phantom
    dataset = MultiSubjectDataset(hdf5)
    step = build(cfg.step, dataset=dataset, device="cpu")
    subset = dataset.testing
    subject = subset.subjects.index(name)
    points = torch.rand(50, 3) * torch.tensor(subset.volume(subject, "input").shape[:3], dtype=torch.float32)
    volume = torch.from_numpy(subset.volume(subject, "input"))
    offsets = neighborhood.offsets_vox(torch.from_numpy(subset.voxel_sizes(subject, "input"))).float()
    batch = type("B", (), {"subset": "testing"})()  # the step reads only the subset name of the batch
    expected = step.interpolate(batch, points, torch.full((50,), subject))
    torch.testing.assert_close(volume_inputs(volume, offsets)(points), expected)
    assert expected.shape == (50, 7 * volume.shape[-1])
