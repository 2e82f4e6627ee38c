"""Tracking with a model trained for a few batches on the phantom: rules, reproducibility,
agreement with the model's packed forward pass, and the dwiml-track / dwiml-visualize-loss CLIs."""
from __future__ import annotations

import shutil
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
import torch
from dipy.io.stateful_tractogram import Space, StatefulTractogram
from dipy.io.streamline import load_tractogram, save_tractogram
from dipy.tracking.stopping_criterion import ActStoppingCriterion, CmcStoppingCriterion
from omegaconf import OmegaConf
from scipy.ndimage import map_coordinates
from scipy.ndimage import binary_dilation

from helpers import compose_run
from dwiml.cli import track as track_cli
from dwiml.cli import track_merge as merge_cli
from dwiml.cli import visualize_loss as loss_cli
from dwiml.data.hdf5 import create_hdf5, load_groups_config, read_subject_list
from dwiml.data.interpolation import trilinear
from dwiml.errors import DwimlError
from dwiml.tracking.subject import Subject, load_tracking_model, subject_from_hdf5, track_subject
from dwiml.tracking.tracker import TrackingOptions
from dwiml.training.run import train
from dwiml.data.builtin import phantom_hdf5

FAST = ["trainer.max_epochs=1", "trainer.max_batches_per_epoch_training=3", "trainer.max_batches_per_epoch_validation=1"]


def trained_run(cache_dir, folder, overrides: list[str]):
    cfg = compose_run(cache_dir, folder, [*FAST, *overrides])
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")  # as the dwiml-train command does
    train(cfg)
    return folder


@pytest.fixture(scope="module")
def run_dir(cache_dir, tmp_path_factory):
    return trained_run(cache_dir, tmp_path_factory.mktemp("run"), [])


@pytest.fixture(scope="module")
def phantom(cache_dir):
    root = phantom_hdf5(cache_dir, nb_subjects=3).parent  # the fixture's draw (other tests add draws)
    name = read_subject_list(root / "subjects" / "testing_subjects.txt")[0]
    return root / "phantom.hdf5", name, root / "subjects" / name


@pytest.fixture(scope="module")
def subject(phantom) -> Subject:
    hdf5, name, folder = phantom
    return subject_from_hdf5(hdf5, name, "input", str(folder / "seeding_mask.nii.gz"), "wm_mask")


@pytest.fixture(scope="module")
def wide_subject(phantom) -> Subject:
    """Seeded anywhere in the white matter, tracked in it grown by two voxels: a barely trained model's
    streamlines continue on both sides of their seed."""
    hdf5, name, _ = phantom
    subject = subject_from_hdf5(hdf5, name, "input", "wm_mask", "wm_mask")
    return replace(subject, tracking_mask=binary_dilation(subject.tracking_mask > 0, iterations=2).astype(np.float32))


@pytest.fixture(scope="module")
def model(run_dir):
    return load_tracking_model(run_dir, "cpu").model


@pytest.fixture(scope="module")
def spec(run_dir):
    """The input specification of the run's models (the LSTM's and the Transformer's alike)."""
    return load_tracking_model(run_dir, "cpu").spec


@pytest.fixture(scope="module")
def transformer(cache_dir, tmp_path_factory):
    """The encoder-decoder Transformer preset, trained for a few batches."""
    return load_tracking_model(trained_run(cache_dir, tmp_path_factory.mktemp("transformer"),
                                           ["model=transformer"]), "cpu")[0]


def streamlines_of(tracked):
    return [s.numpy().astype(np.float64) for s in tracked.as_list()]


@pytest.mark.parametrize("keep_last_point", [True, False])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_every_streamline_respects_the_rules(model, spec, subject, bidirectional, keep_last_point):
    options = TrackingOptions(step_size_mm=0.8, max_angle_deg=25, min_length_mm=6, max_length_mm=30,
                              bidirectional=bidirectional, keep_last_point=keep_last_point, batch_size=100)
    tracked = track_subject(model, spec, subject, options, nb_seeds=300, allow_mismatch=True)  # trained on 1 mm steps
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
def test_tracking_follows_the_models_packed_forward_pass(request, name, spec, wide_subject, bidirectional):
    """Each step goes where the model's training-time forward pass on the stored streamline points.
    Bidirectional: from the seed on, the state rebuilt on the reversed first half is exact.
    (A wide angle lets this barely trained model continue past the seed.)"""
    model = request.getfixturevalue(name)
    options = TrackingOptions(min_length_mm=0, max_angle_deg=180, bidirectional=bidirectional, keep_last_point=False)
    tracked = track_subject(model, spec, wide_subject, options, nb_seeds=60)
    volume = torch.from_numpy(wide_subject.input)
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


def test_seeds_are_stored_and_lie_on_their_streamlines(model, spec, subject):
    for bidirectional in (True, False):
        tracked = track_subject(model, spec, subject, TrackingOptions(min_length_mm=0, bidirectional=bidirectional),
                                nb_seeds=50)
        for line, seed in zip(tracked.as_list(), tracked.seeds):
            distances = (line - seed).norm(dim=1)
            assert distances.min() < 1e-5
            if not bidirectional:
                assert distances[0] < 1e-5


def test_deterministic_tracking_is_reproducible(model, spec, subject):
    """Bitwise with the same batch size; with another one, float rounding of the batched matrix
    products may flip a decision right at a threshold, so nearly all streamlines agree."""
    options = TrackingOptions(min_length_mm=0)
    a, b, c = (track_subject(model, spec, subject, replace(options, batch_size=size), seeds_per_voxel=1)
               for size in (1000, 1000, 7))
    assert torch.equal(a.points, b.points) and torch.equal(a.lengths, b.lengths)
    assert torch.equal(a.seeds, c.seeds)
    assert (a.lengths == c.lengths).float().mean() > 0.95


@pytest.mark.parametrize("name", ["model", "transformer"])
def test_bidirectional_streamlines_do_not_depend_on_the_batch(request, name, spec, wide_subject):
    """Tracked 100 together or each seed alone, every streamline is the same (rows are independent,
    the replay of the first halves included), and most continue on the other side of their seed."""
    model = request.getfixturevalue(name)
    options = TrackingOptions(min_length_mm=0, max_angle_deg=180, batch_size=100)
    together, alone = (track_subject(model, spec, wide_subject, replace(options, batch_size=size), nb_seeds=20)
                       for size in (100, 1))
    assert torch.equal(together.seeds, alone.seeds) and torch.equal(together.lengths, alone.lengths)
    torch.testing.assert_close(together.points, alone.points, atol=1e-4, rtol=0)
    seed_index = torch.stack([(line - seed).norm(dim=1).argmin() for line, seed in zip(together.as_list(),
                                                                                       together.seeds)])
    assert ((seed_index > 0) & (seed_index < together.lengths - 1)).sum() >= 10


def test_eos_threshold_needs_an_eos_output(model, spec, subject):
    if getattr(model.head, "has_eos", False):
        pytest.skip("head has an EOS output")
    with pytest.raises(DwimlError, match="end-of-streamline"):
        track_subject(model, spec, subject, TrackingOptions(eos_threshold=0.5), nb_seeds=5)


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


def test_cli_mask_interpolation(run_dir, phantom, tmp_path):
    """--mask-interp trilinear: every point but the seed and the last one has a trilinearly interpolated mask value
    >= 0.5 (scipy's map_coordinates); nearest (the default) reads the voxel of the point."""
    hdf5, name, folder = phantom
    mask = nib.load(folder / "wm_mask.nii.gz").get_fdata()
    values = {}
    for mode in ("nearest", "trilinear"):
        out = tmp_path / f"{mode}.trk"
        track_cli.main([str(run_dir), str(out), "--hdf5", str(hdf5), "--subject", name, "--seeding-mask",
                        str(folder / "seeding_mask.nii.gz"), "--tracking-mask", "wm_mask", "--nb-seeds", "100",
                        "--min-length-mm", "0", "--mask-interp", mode, "--keep-last-point", "--forward-only"])
        sft = load_tractogram(str(out), "same")
        sft.to_vox()
        sft.to_center()
        inner = np.concatenate([s[1:-1] for s in sft.streamlines if len(s) > 2])
        values[mode] = (map_coordinates(mask, inner.T, order=1, mode="grid-constant"),
                        mask[tuple(np.floor(inner + 0.5).astype(int).T)])
    trilinear_values, _ = values["trilinear"]
    assert trilinear_values.min() >= 0.5 - 1e-5
    nearest_trilinear, nearest_voxel = values["nearest"]
    assert nearest_voxel.min() == 1 and nearest_trilinear.min() < 0.5  # nearest goes where trilinear stops


@pytest.mark.parametrize("rule", ["act", "cmc"])
def test_cli_anatomically_constrained_tracking_from_the_interface(run_dir, phantom, tmp_path, rule):
    """--act with include = outside the WM, exclude = a slab of the WM, seeds at the WM/GM interface:
    by dipy's ActStoppingCriterion on the same maps, both ends of every kept streamline are ENDPOINTs
    and every other point (but the seed) a TRACKPOINT; streamlines crossing the slab are rejected.
    --cmc: both ends in the include map (dipy's CmcStoppingCriterion.get_include > 0)."""
    hdf5, name, folder = phantom
    wm_image = nib.load(folder / "wm_mask.nii.gz")
    wm = wm_image.get_fdata()
    exclude = np.zeros_like(wm)
    slab = int(np.argmax(wm.sum(axis=(0, 1))))  # the axial slice with the most WM
    exclude[:, :, slab] = wm[:, :, slab]
    for data, file in ((1 - wm, "include.nii.gz"), (exclude, "exclude.nii.gz")):
        nib.save(nib.Nifti1Image(data.astype(np.float32), wm_image.affine), tmp_path / file)
    out = tmp_path / "act.trk"
    track_cli.main([str(run_dir), str(out), "--hdf5", str(hdf5), "--subject", name, "--seed-interface", "wm_mask",
                    str(tmp_path / "include.nii.gz"), f"--{rule}", str(tmp_path / "include.nii.gz"),
                    str(tmp_path / "exclude.nii.gz"), "--nb-seeds", "300", "--min-length-mm", "0",
                    "--max-angle-deg", "180"])  # lets this barely trained model go on past its seed
    sft = load_tractogram(str(out), "same")
    sft.to_vox()
    sft.to_center()
    assert 10 < len(sft) < 300
    if rule == "cmc":
        cmc = CmcStoppingCriterion(1 - wm, exclude, 1.0, 2.0)
        assert all(cmc.get_include(line[i].astype(np.float64)) > 0 for line in sft.streamlines for i in (0, -1))
        return
    dipy = ActStoppingCriterion(1 - wm, exclude)
    for line, seed in zip(sft.streamlines, sft.data_per_streamline["seeds"]):
        statuses = np.array([int(dipy.check_point(p)) for p in line.astype(np.float64)])
        assert statuses[0] == statuses[-1] == 2
        others = np.linalg.norm(line[1:-1] - seed, axis=1) > 1e-4
        assert np.all(statuses[1:-1][others] == 1)


def test_merged_seed_shards_equal_the_single_job(run_dir, phantom, tmp_path, capsys):
    """Probabilistic, both directions, 5 chunks of 20 seeds over 3 shards (with 1 or 2 chunks each):
    the merge (shards given in any order, an empty one too) equals the unsharded output, streamline
    for streamline."""
    hdf5, name, folder = phantom

    def track(out, *options):
        track_cli.main([str(run_dir), str(out), "--hdf5", str(hdf5), "--subject", name, "--seeding-mask",
                        str(folder / "seeding_mask.nii.gz"), "--tracking-mask", "wm_mask", "--nb-seeds", "90",
                        "--min-length-mm", "3", "--algo", "prob", "--batch-size", "20", *options])
        return load_tractogram(str(out), "same")

    single = track(tmp_path / "single.trk")
    shards = [tmp_path / f"shard{i}.trk" for i in (1, 2, 3)]
    parts = [track(path, "--seed-shard", f"{i}/3") for i, path in enumerate(shards, start=1)]
    ids = [set(p.data_per_streamline["seed_ids"][:, 0].astype(int)) for p in parts]
    assert all(ids) and not ids[0] & ids[1] and not ids[1] & ids[2] and max(ids[0]) < 20 <= min(ids[1])
    assert len(track(tmp_path / "empty.trk", "--seed-shard", "1/6")) == 0  # 5 chunks, 6 shards: one has none
    merge_cli.main([str(tmp_path / "merged.trk"), *map(str, reversed(shards)), str(tmp_path / "empty.trk")])
    assert capsys.readouterr().out.strip().endswith(f"{len(single)} streamlines -> {tmp_path / 'merged.trk'}")
    merged = load_tractogram(str(tmp_path / "merged.trk"), "same")
    assert 20 < len(merged) == len(single) < 90
    for a, b in zip(merged.streamlines, single.streamlines):
        np.testing.assert_array_equal(a, b)
    for key in ("seeds", "seed_ids"):
        np.testing.assert_array_equal(merged.data_per_streamline[key], single.data_per_streamline[key])
    other = track(tmp_path / "other.trk", "--rng-seed", "7")  # the draws do depend on the seed
    assert len(other) != len(single) or any(len(a) != len(b) or not np.allclose(a, b)
                                            for a, b in zip(other.streamlines, single.streamlines))
    bad = {"share seeds": [shards[0], shards[0]], "a .tck keeps no seed ids": [tmp_path / "x.tck"],
           "not written by dwiml-track": [tmp_path / "plain.trk"], "expected I/N": None, "need 1 <= I <= N": None}
    save_tractogram(StatefulTractogram(single.streamlines, single, Space.RASMM), str(tmp_path / "plain.trk"))
    for message, paths in bad.items():
        with pytest.raises(SystemExit) as e:
            if paths is None:
                track(tmp_path / "y.trk", "--seed-shard", "2" if message == "expected I/N" else "4/3")
            else:
                merge_cli.main([str(tmp_path / "y.trk"), *map(str, paths)])
        assert e.value.code.startswith("dwiml-") and message in e.value.code
        assert not (tmp_path / "y.trk").exists()


def test_cli_batch_size_auto(run_dir, phantom, tmp_path, capsys):
    """--batch-size auto prints the size it chose (here the cap: an LSTM's state is small), and
    tracks as that number given explicitly does."""
    hdf5, name, folder = phantom
    common = [str(run_dir), "--hdf5", str(hdf5), "--subject", name, "--seeding-mask",
              str(folder / "seeding_mask.nii.gz"), "--tracking-mask", "wm_mask", "--nb-seeds", "50"]
    track_cli.main([common[0], str(tmp_path / "auto.trk"), *common[1:], "--batch-size", "auto"])
    chosen = int(capsys.readouterr().out.split("batch size: ")[1].split()[0])
    assert chosen == 100_000
    track_cli.main([common[0], str(tmp_path / "fixed.trk"), *common[1:], "--batch-size", str(chosen)])
    auto, fixed = (load_tractogram(str(tmp_path / f"{n}.trk"), "same") for n in ("auto", "fixed"))
    assert len(auto) == len(fixed) > 0
    for a, b in zip(auto.streamlines, fixed.streamlines):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(SystemExit):
        track_cli.main([common[0], str(tmp_path / "x.trk"), *common[1:], "--batch-size", "many"])


def test_cli_from_nifti_files_and_bad_input(run_dir, phantom, tmp_path, capsys):
    _, name, folder = phantom
    common = ["--seeding-mask", str(folder / "seeding_mask.nii.gz"), "--tracking-mask", str(folder / "wm_mask.nii.gz")]
    out = tmp_path / "t.trk"
    track_cli.main([str(run_dir / "best_model"), str(out), "--hdf5", str(phantom[0]), "--subject", name,
                    "--input-group", "input", "--nb-seeds", "20", "--min-length-mm", "0", *common])
    from_hdf5 = load_tractogram(str(out), "same")
    track_cli.main([str(run_dir), str(out), "-f", "--input", str(folder / "sh.nii.gz"), "--nb-seeds", "20",
                    "--min-length-mm", "0", *common])
    from_files = load_tractogram(str(out), "same")
    assert len(from_files) == 20  # every seed gives a streamline (no minimum length)
    for a, b in zip(from_hdf5.streamlines, from_files.streamlines):  # the same volume read two ways
        np.testing.assert_allclose(a, b, atol=1e-4)
    bad = {"no subject 'nobody'": ["--hdf5", str(phantom[0]), "--subject", "nobody"],
           "does not match the input's grid": ["--input", str(folder / "sh.nii.gz"), "--seeding-mask",
                                               str(folder / "sh.nii.gz")],
           "must end in .trk": ["--input", str(folder / "sh.nii.gz")],
           "the input has 1 features, the model was trained on 28": ["--input", str(folder / "wm_mask.nii.gz")],
           "no record of the run's HDF5 file: give --hdf5": ["--subject", name],
           "is not a model folder": ["--input", str(folder / "sh.nii.gz")]}
    models = {"no record of the run's HDF5 file: give --hdf5": run_dir / "best_model",
              "is not a model folder": tmp_path}
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

    model, spec, _ = load_tracking_model(run_dir, "cpu")
    dataset = MultiSubjectDataset(hdf5)
    subset = next(dataset.subset(s) for s in ("training", "validation", "testing") if name in dataset.subset(s).subjects)
    index = subset.subjects.index(name)
    batch = BatchLoader(subset, "streamlines", spec.resampling.step_size_mm, augment=False)[
        BatchSpec((index,), (np.arange(len(sft)),), 0)]
    with torch.no_grad():
        expected, nb = OneInputStep(dataset, "input")(model.eval(), batch)
    values = np.concatenate([v[:-1] for v in losses])
    assert nb == len(values)
    np.testing.assert_allclose(values.mean(), float(expected), rtol=1e-4)
    assert out.with_suffix(".png").stat().st_size > 1000


def test_visualize_loss_resamples_as_in_training(cache_dir, phantom, tmp_path):
    """A model trained on 20-point streamlines is scored on 20-point streamlines (the run's HDF5 from its record)."""
    run = trained_run(cache_dir, tmp_path / "run", ["loader.step_size_mm=null", "loader.nb_points=20"])
    out = tmp_path / "loss.trk"
    loss_cli.main([str(run), str(out), "--subject", phantom[1]])
    sft = load_tractogram(str(out), "same")
    assert len(sft) > 10 and {len(s) for s in sft.streamlines} == {20}
    assert all(np.isfinite(v[:-1, 0]).all() for v in sft.data_per_point["loss"])


def test_a_model_folder_copied_alone_tracks_with_no_input_group(run_dir, phantom, tmp_path):
    """No run folder, no .hydra/: the model folder's input specification names the input group,
    the neighbourhood and the step; the same streamlines as from the run folder (whose HDF5 it records)."""
    hdf5, name, folder = phantom
    alone = shutil.copytree(run_dir / "best_model", tmp_path / "elsewhere" / "model")
    assert sorted(p.name for p in alone.parent.iterdir()) == ["model"]
    common = ["--subject", name, "--seeding-mask", str(folder / "seeding_mask.nii.gz"), "--tracking-mask", "wm_mask",
              "--nb-seeds", "30", "--min-length-mm", "0"]
    track_cli.main([str(alone), str(tmp_path / "alone.trk"), "--hdf5", str(hdf5), *common])
    track_cli.main([str(run_dir), str(tmp_path / "run.trk"), *common])
    copied, from_run = (load_tractogram(str(tmp_path / f"{n}.trk"), "same").streamlines for n in ("alone", "run"))
    assert len(copied) == len(from_run) == 30
    for a, b in zip(copied, from_run):
        np.testing.assert_array_equal(a, b)
    (alone / "input_spec.json").unlink()  # as a model folder of an older dwiml
    with pytest.raises(SystemExit) as e:
        track_cli.main([str(alone), str(tmp_path / "old.trk"), "--hdf5", str(hdf5), *common])
    assert e.value.code == (f"dwiml-track: error: {alone} has no input_spec.json: the model takes no input volume "
                            "(e.g. step=streamlines) or was saved by an older dwiml, so it cannot track")


def test_an_input_in_another_sh_basis_is_refused(run_dir, phantom, tmp_path):
    """The phantom declares its SH basis; the same coefficients declared in another basis (an HDF5
    group, or --sh-basis for a NIfTI file) are refused with one line, unless --allow-mismatch."""
    hdf5, name, folder = phantom
    spec = load_tracking_model(run_dir, "cpu").spec
    assert (spec.volume.sh_basis, spec.volume.sh_order, spec.volume.nb_features) == ("descoteaux07", 6, 28)
    groups = load_groups_config(folder.parent / "groups_config.yaml")
    groups["input"]["sh_basis"] = "tournier07"
    other = create_hdf5(folder.parent, groups, tmp_path / "tournier.hdf5", [name], [], [])
    masks = ["--seeding-mask", str(folder / "seeding_mask.nii.gz"), "--tracking-mask", str(folder / "wm_mask.nii.gz"),
             "--nb-seeds", "10"]
    sources = {"hdf5": ["--hdf5", str(other), "--subject", name],
               "nifti": ["--input", str(folder / "sh.nii.gz"), "--sh-basis", "tournier07", "--sh-order", "6"]}
    for source, args in sources.items():
        out = tmp_path / f"{source}.trk"
        with pytest.raises(SystemExit) as e:
            track_cli.main([str(run_dir), str(out), *args, *masks])
        assert e.value.code == (f"dwiml-track: error: subject '{name if source == 'hdf5' else 'sh.nii.gz'}': the input "
                                "does not match the model's: sh_basis 'tournier07' (the model's: 'descoteaux07') "
                                "(--allow-mismatch to proceed)")
        assert not out.exists()
        track_cli.main([str(run_dir), str(out), *args, *masks, "--allow-mismatch"])
        assert out.is_file()
    with pytest.raises(SystemExit, match="sh_order 4 means 15 or 25 coefficients"):
        track_cli.main([str(run_dir), str(tmp_path / "x.trk"), "--input", str(folder / "sh.nii.gz"), "--sh-order", "4",
                        *masks])
    with pytest.raises(SystemExit, match=r"tracking steps of 0.5 mm, the model trained on streamlines with "
                                         r"step_size_mm=1.0 \(--allow-mismatch to proceed\)"):
        track_cli.main([str(run_dir), str(tmp_path / "x.trk"), "--hdf5", str(hdf5), "--subject", name,
                        "--step-size-mm", "0.5", *masks])


def test_tracking_with_the_latest_epoch(cache_dir, phantom, tmp_path):
    """--use-latest-epoch takes the checkpoint's weights (a model folder too), not best_model/'s: here
    the best model is the first epoch (no later one can improve by patience_delta), the checkpoint the second."""
    run = trained_run(cache_dir, tmp_path / "run", ["trainer.max_epochs=2", "trainer.patience_delta=1e9",
                                                    "trainer.patience=null"])
    latest, best = (load_tracking_model(run, "cpu", use_latest_epoch=flag).model.state_dict() for flag in (True, False))
    saved = torch.load(run / "checkpoint" / "state.pt", weights_only=True)
    assert saved["epoch"] == 2 and all(torch.equal(latest[k], saved["model"][k]) for k in latest)
    assert not all(torch.equal(latest[k], best[k]) for k in latest)
    _, name, folder = phantom
    out = tmp_path / "latest.trk"
    track_cli.main([str(run), str(out), "--use-latest-epoch", "--subject", name, "--seeding-mask",
                    str(folder / "seeding_mask.nii.gz"), "--nb-seeds", "10"])
    assert len(load_tractogram(str(out), "same")) > 0
    with pytest.raises(DwimlError, match="is a model folder"):
        load_tracking_model(run / "best_model", "cpu", use_latest_epoch=True)


def test_phantom_tracking_preset_composes(cache_dir, tmp_path):
    cfg = compose_run(cache_dir, tmp_path, ["experiment=phantom_tracking", "trainer.max_epochs=3"])
    assert cfg.loader.noise_gaussian_size_forward == 0.7 and cfg.model.nb_previous_dirs == 1
    assert cfg.trainer.max_epochs == 3 and cfg.step.input_group == "fodf" and cfg.step.add_eos_target


def test_tracking_inputs_use_the_runs_neighborhood(cache_dir, tmp_path, phantom):
    """A model trained with a neighbourhood tracks with the same inputs as its training step."""
    from dwiml.config.build import build
    from dwiml.data.dataset import MultiSubjectDataset
    from dwiml.data.input_spec import Resampling
    from dwiml.tracking.tracker import volume_inputs

    cfg = compose_run(cache_dir, tmp_path, ["step.neighborhood_type=axes", "step.neighborhood_radius_mm=1.5"])
    hdf5, name, _ = phantom
    dataset = MultiSubjectDataset(hdf5)
    step = build(cfg.step, dataset=dataset, device="cpu")
    neighborhood = step.input_spec("streamlines", Resampling(step_size_mm=1.0)).neighborhood  # what tracking uses
    assert len(neighborhood) == 7
    subset = dataset.testing
    subject = subset.subjects.index(name)
    points = torch.rand(50, 3) * torch.tensor(subset.volume(subject, "input").shape[:3], dtype=torch.float32)
    volume = torch.from_numpy(subset.volume(subject, "input"))
    offsets = neighborhood.offsets_vox(torch.from_numpy(subset.voxel_sizes(subject, "input"))).float()
    batch = type("B", (), {"subset": "testing"})()  # the step reads only the subset name of the batch
    expected = step.interpolate(batch, points, torch.full((50,), subject))
    torch.testing.assert_close(volume_inputs(volume, offsets)(points), expected)
    assert expected.shape == (50, 7 * volume.shape[-1])
