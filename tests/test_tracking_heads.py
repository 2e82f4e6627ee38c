"""Tracking with the real heads: the end-of-streamline (EOS) stop of a trained EOS output, through
dwiml-track; probabilistic tracking with every head preset, whose step directions must have
the spread the head predicts (closed forms, or numpy draws independent of torch's)."""
from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from dipy.data import get_sphere
from dipy.io.stateful_tractogram import Origin, Space, StatefulTractogram
from dipy.io.streamline import load_tractogram, save_tractogram
from omegaconf import OmegaConf
from scipy import stats
from scipy.special import softmax

from tests.byo_model import MyModel
from helpers import compose_run
from dwiml.cli import track as track_cli
from dwiml.data.hdf5 import create_hdf5, load_groups_config
from dwiml.data.interpolation import trilinear
from dwiml.errors import DwimlError
from dwiml.models.io import build_model
from dwiml.tracking.subject import load_tracking_model, subject_from_hdf5
from dwiml.tracking.tracker import Tracked, Tracker, TrackingOptions, volume_inputs
from dwiml.training.run import train
from helpers import vmf_w_cdf

# ---- EOS: a model trained on streamlines that all end in a zone marked by the input ----

SHAPE = (30, 9, 9)
AFFINE = np.array([[1.0, 0, 0, -10.0], [0, 1.5, 0, 5.0], [0, 0, 1.5, 0.0], [0, 0, 0, 1]])
END_ZONE = (14, 17)  # voxels x where the input's first feature is 1; every streamline ends at x in [14.5, 15.5]
STEP_MM = 2.0
EOS_TRAINING = ["model=gru", "model.hidden_sizes=[8]", "model/head=cosine", "model.head.eos_weight=1",
                "step.add_eos_target=true", "loader.step_size_mm=2", "loader.reverse_ratio=0",
                "sampler.batch_size=20", "optim.lr=0.05", "trainer.max_epochs=8",
                "trainer.max_batches_per_epoch_validation=1"]


def end_zone_subject(folder, rng: np.random.Generator) -> None:
    """Straight streamlines along +x from x in [2, 6] to x in [14.5, 15.5]; the input is
    (1 in the end zone else 0, 1); seeds in the middle of the streamlines."""
    (folder / "bundles").mkdir(parents=True)
    volume = np.zeros(SHAPE + (2,), np.float32)
    volume[END_ZONE[0]:END_ZONE[1] + 1, ..., 0] = 1
    volume[..., 1] = 1
    nib.save(nib.Nifti1Image(volume, AFFINE), folder / "input.nii.gz")
    seeding = np.zeros(SHAPE, np.uint8)
    seeding[5:10, 3:6, 3:6] = 1
    nib.save(nib.Nifti1Image(seeding, AFFINE), folder / "seeding_mask.nii.gz")
    starts, ends = rng.uniform(2, 6, 60), rng.uniform(14.5, 15.5, 60)
    yz = rng.uniform(3, 5, (60, 2))
    t = np.linspace(0, 1, 12)[:, None]
    lines = [np.column_stack([a + t * (b - a), np.tile(c, (12, 1))]).astype(np.float32)
             for a, b, c in zip(starts, ends, yz)]
    sft = StatefulTractogram(lines, nib.load(folder / "input.nii.gz"), Space.VOX, origin=Origin.NIFTI)
    save_tractogram(sft, str(folder / "bundles" / "line.trk"))


@pytest.fixture(scope="module")
def eos_run(tmp_path_factory):
    """A GRU with an EOS output trained (a few seconds) on three such subjects: its run folder,
    the HDF5 and the testing subject's folder."""
    root = tmp_path_factory.mktemp("end_zone")
    rng = np.random.default_rng(0)
    for name in ("s1", "s2", "s3"):
        end_zone_subject(root / name, rng)
    groups = {"input": {"type": "volume", "files": ["input.nii.gz"], "standardization": "none"},
              "streamlines": {"type": "streamlines", "files": ["bundles/*.trk"]}}
    (root / "groups.yaml").write_text(yaml.safe_dump(groups))
    hdf5 = create_hdf5(root, load_groups_config(root / "groups.yaml"), root / "data.hdf5", ["s1"], ["s2"], ["s3"])
    run_dir = root / "run"
    cfg = compose_run(root, run_dir, ["dataset=hdf5", f"dataset.hdf5_path={hdf5}", *EOS_TRAINING])
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")  # as the dwiml-train command does
    train(cfg)
    return run_dir, hdf5, root / "s3"


def track_with_cli(eos_run, out, *options: str) -> StatefulTractogram:
    """dwiml-track on the testing subject, forward only, no tracking mask (the whole volume)
    and no angle limit: only EOS, the maximum length or the volume's border can stop."""
    run_dir, hdf5, folder = eos_run
    track_cli.main([str(run_dir), str(out), "--hdf5", str(hdf5), "--subject", "s3", "--seeding-mask",
                    str(folder / "seeding_mask.nii.gz"), "--seeds-per-voxel", "2", "--forward-only",
                    "--max-angle-deg", "180", "--min-length-mm", "0", "--max-length-mm", "60", *options])
    sft = load_tractogram(str(out), "same")
    sft.to_vox()
    sft.to_center()
    return sft


def test_a_trained_eos_output_stops_streamlines_at_the_true_ends(eos_run, tmp_path):
    stopped = track_with_cli(eos_run, tmp_path / "eos.trk", "--eos-threshold", "0.5")
    free = track_with_cli(eos_run, tmp_path / "free.trk")
    assert len(stopped) == len(free) == 5 * 3 * 3 * 2
    np.testing.assert_array_equal(stopped.data_per_streamline["seeds"], free.data_per_streamline["seeds"])
    sizes = np.array([1.0, 1.5, 1.5])
    border = np.array(SHAPE) - 0.5
    for with_eos, without, seed in zip(stopped.streamlines, free.streamlines, stopped.data_per_streamline["seeds"]):
        # The same path until the EOS stop, which leaves the rest of the path untracked.
        assert len(with_eos) < len(without)
        np.testing.assert_allclose(with_eos, without[:len(with_eos)], atol=1e-4)
        # Without EOS, only the volume's border or the maximum length stops.
        length = np.linalg.norm(np.diff(without, axis=0) * sizes, axis=1).sum()
        near_border = np.min(np.minimum(without[-1] + 0.5, border - without[-1]) * sizes) <= STEP_MM
        assert near_border or length > 60 - STEP_MM
        # With EOS, the ends lie within one step of the true ends: x in [14.5, 15.5], along x from the seed.
        end = with_eos[-1]
        assert 14.5 - STEP_MM <= end[0] <= 15.5 + STEP_MM and np.all(np.abs(end[1:] - seed[1:]) < 1)


@pytest.mark.parametrize("threshold", ["0", "1", "1.5"])
def test_eos_threshold_must_be_a_probability(eos_run, tmp_path, threshold):
    with pytest.raises(SystemExit) as e:
        track_with_cli(eos_run, tmp_path / "eos.trk", "--eos-threshold", threshold)
    assert e.value.code == f"dwiml-track: error: --eos-threshold: {float(threshold)} must be in (0, 1) or 'max'"
    assert not list(tmp_path.iterdir())


def test_eos_stops_at_the_first_point_whose_probability_exceeds_the_threshold(eos_run, tmp_path):
    """The model's packed forward pass on each tracked streamline (as in training) gives an EOS
    probability above the threshold at its last point and at no point before."""
    run_dir, hdf5, folder = eos_run
    model = load_tracking_model(run_dir, "cpu")[0]
    for threshold in (0.3, 0.7):
        sft = track_with_cli(eos_run, tmp_path / f"eos{threshold}.trk", "--eos-threshold", str(threshold))
        lines = [torch.from_numpy(np.asarray(s, np.float32)) for s in sft.streamlines]
        points, lengths = torch.cat(lines), torch.tensor([len(s) for s in lines])
        last = torch.zeros(len(points), dtype=torch.bool)
        last[torch.cumsum(lengths, 0) - 1] = True
        segments = torch.where(last[:, None], 0.0, torch.roll(points, -1, 0) - points)
        volume = torch.from_numpy(subject_from_hdf5(hdf5, "s3", "input", str(folder / "seeding_mask.nii.gz"),
                                                    None).input)
        with torch.no_grad():
            eos = model.head.eos_probability(model(trilinear(volume, points), lengths, segments))
        assert lengths.min() > 2  # the seeds are far from the end zone
        assert torch.all(eos[last] > threshold) and torch.all(eos[~last] <= threshold)


# ---- probabilistic tracking: a model whose head outputs one known distribution everywhere ----

DIRECTION = np.array([0.6, 0.0, 0.8])  # every head's deterministic direction here (a vertex of no sphere)
VOXEL_SIZES = torch.tensor([1.0, 2.0, 1.5])
NB_STEPS = 15
MIXTURE_LOGITS = [1.0, 0.0]  # two components; the first, the most likely, has the widest spread
KAPPAS = [4.0, 40.0]  # von Mises-Fisher components
SIGMAS = [0.4, 0.1]  # Gaussian components (mean DIRECTION)
SPHERE_KAPPA = 8.0  # sphere logits: SPHERE_KAPPA * vertex . DIRECTION
REGRESSION = ["cosine", "l2", "cosine_l2"]
HEAD_PRESETS = [*REGRESSION, "sphere_classification", "smooth_sphere_classification", "gaussian", "gaussian_mixture",
                "fisher_von_mises", "fisher_von_mises_mixture"]


def vmf_mean_cos(kappa: float) -> float:
    """E[cos] of the angle to the mean direction under a vMF on S^2 (closed form)."""
    return 1 / math.tanh(kappa) - 1 / kappa


def gaussian_mean_cos(sigma: float, n: int = 400_000) -> float:
    """E[cos] of the angle between normalize(DIRECTION + sigma noise) and DIRECTION (numpy draws)."""
    x = DIRECTION + sigma * np.random.default_rng(0).normal(size=(n, 3))
    return float(np.mean(x @ DIRECTION / np.linalg.norm(x, axis=1)))


def known_distribution(head: str) -> tuple[np.ndarray, np.ndarray, float]:
    """The head's outputs (its distribution parameters), its deterministic direction, and the
    expected mean cosine between a drawn direction and that direction."""
    if head in REGRESSION:
        return DIRECTION, DIRECTION, 1.0
    if "sphere" in head:
        vertices = get_sphere(name="repulsion100").vertices
        probabilities = softmax(SPHERE_KAPPA * vertices @ DIRECTION)
        mode = vertices[np.argmax(probabilities)]
        return SPHERE_KAPPA * vertices @ DIRECTION, mode, float(probabilities @ (vertices @ mode))
    if "fisher_von_mises" in head:
        components = [(np.append(DIRECTION, math.log(kappa)), vmf_mean_cos(kappa)) for kappa in KAPPAS]
    else:
        components = [(np.append(DIRECTION, np.full(3, math.log(sigma))), gaussian_mean_cos(sigma)) for sigma in SIGMAS]
    if "mixture" not in head:
        return components[0][0], DIRECTION, components[0][1]
    params, mean_cos = zip(*components)
    return np.concatenate([MIXTURE_LOGITS, *params]), DIRECTION, float(softmax(MIXTURE_LOGITS) @ mean_cos)


def constant_model(head: str, tmp_path):
    """A small Learn2Track with the head preset ``head`` (Hydra's compose API, with an EOS output)
    whose last layer is set by hand: the same outputs at every point, an EOS probability of ~0."""
    small = {"sphere": ["model.head.sphere=repulsion100"], "mixture": ["model.head.nb_components=2"]}
    cfg = compose_run(tmp_path, tmp_path, [f"model/head={head}", "model.hidden_sizes=[4]", "model.head.eos_weight=1",
                                           *(o for key, options in small.items() if key in head for o in options)])
    config = {**OmegaConf.to_container(cfg.model, resolve=True), "input_size": 2}
    model = build_model(config)
    outputs, mode, mean_cos = known_distribution(head)
    last = model.head.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor(np.append(outputs, -20.0), dtype=torch.float32))
    return model.eval(), mode, mean_cos


def track(model, seeds: torch.Tensor, shape: tuple[int, int, int] = (40, 20, 30), **options) -> Tracked:
    """Forward tracking in a random volume, mask = the whole volume, no angle limit, an EOS
    threshold (never reached), at most NB_STEPS steps."""
    volume = torch.rand((*shape, 2), generator=torch.Generator().manual_seed(0))
    options = TrackingOptions(**{"step_size_mm": 1.0, "max_angle_deg": 180.0, "min_length_mm": 0.0,
                                 "max_length_mm": float(NB_STEPS), "bidirectional": False, "eos_threshold": 0.5,
                                 **options})
    return Tracker(model, volume_inputs(volume), torch.ones(shape), VOXEL_SIZES, options).track(seeds)


@pytest.fixture(scope="module")
def seeds():
    return torch.tensor([20.0, 10.0, 15.0]) + torch.rand(300, 3, generator=torch.Generator().manual_seed(1)) - 0.5


@pytest.mark.parametrize("head", HEAD_PRESETS)
def test_probabilistic_steps_have_the_spread_the_head_predicts(head, seeds, tmp_path):
    model, mode, mean_cos = constant_model(head, tmp_path)
    deterministic, first, again, other = (track(model, seeds, algo=algo, rng_seed=seed).points.view(
        len(seeds), NB_STEPS + 1, 3) for algo, seed in (("det", 1), ("prob", 1), ("prob", 1), ("prob", 2)))
    assert torch.equal(first, again)
    steps = [np.diff(points.double().numpy(), axis=1).reshape(-1, 3) for points in (deterministic, first)]
    # A step of step_size_mm along the drawn direction (voxel space), converted per axis.
    for s in steps:
        np.testing.assert_allclose(np.linalg.norm(s * VOXEL_SIZES.numpy(), axis=1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(steps[0] / np.linalg.norm(steps[0], axis=1, keepdims=True),
                               np.tile(mode, (len(steps[0]), 1)), atol=1e-5)
    cos = steps[1] @ mode / np.linalg.norm(steps[1], axis=1)
    if head in REGRESSION:  # a regression head's point estimate: its sample is its direction
        assert torch.equal(first, deterministic) and torch.equal(first, other)
        return
    assert not torch.equal(first, other) and not torch.equal(first, deterministic)
    assert abs(cos.mean() - mean_cos) < 5 * cos.std() / math.sqrt(len(cos))
    if head == "fisher_von_mises":
        assert stats.kstest(cos, vmf_w_cdf, args=(KAPPAS[0],)).pvalue > 1e-3


def test_bidirectional_probabilistic_tracking_is_reproducible(tmp_path):
    """Seeds in a small volume: first halves leave it early, second halves use the length left."""
    model, _, _ = constant_model("fisher_von_mises", tmp_path)
    seeds = torch.tensor([6.0, 3.0, 5.0]) + torch.rand(100, 3, generator=torch.Generator().manual_seed(3)) - 0.5
    first, again, other = (track(model, seeds, (12, 6, 10), algo="prob", rng_seed=seed, bidirectional=True)
                           for seed in (1, 1, 2))
    assert torch.equal(first.points, again.points) and torch.equal(first.lengths, again.lengths)
    assert not torch.equal(first.points, other.points)
    seed_inside = [min((line[0] - seed).norm(), (line[-1] - seed).norm()) > 0.1
                   for line, seed in zip(first.as_list(), first.seeds)]
    assert sum(seed_inside) > 10  # both halves were tracked


def test_probabilistic_tracking_needs_a_head_that_samples():
    model = MyModel(2, hidden_size=4, head=lambda size: torch.nn.Linear(size, 3))
    with pytest.raises(DwimlError, match="Linear cannot sample"):
        Tracker(model, volume_inputs(torch.zeros(4, 4, 4, 2)), torch.ones(4, 4, 4), torch.ones(3),
                TrackingOptions(algo="prob"))


def test_streamlines_tracked_to_the_maximum_length_keep_every_step(seeds, tmp_path):
    """10.4 mm in 0.8 mm steps is 13 steps: none may be lost to rounding (a float32 sum of the steps
    passes 10.4 mm; lengths recomputed from float32 points pass it for some of the streamlines)."""
    model, _, _ = constant_model("cosine", tmp_path)
    tracked = track(model, seeds, step_size_mm=0.8, max_length_mm=10.4)
    assert tracked.lengths.tolist() == [14] * len(seeds)
