"""Anatomically constrained tracking against dipy: ACT and CMC point statuses on the same partial
volume maps (written as NIfTI files and read back) as dipy's ActStoppingCriterion and
CmcStoppingCriterion, the tracker's decisions along straight streamlines, and WM/GM interface seeds."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from dipy.tracking.stopping_criterion import ActStoppingCriterion, CmcStoppingCriterion
from omegaconf import OmegaConf

from helpers import compose_run
from dwiml.errors import DwimlError
from dwiml.models.io import build_model
from dwiml.tracking.seeds import seeds_in_mask
from dwiml.tracking.tissues import Tissue, TissueMaps, interface_mask
from dwiml.tracking.tracker import Tracker, TrackingOptions, volume_inputs

SHAPE = (9, 7, 6)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    """Random include/exclude partial volumes (summing to <= 1), with some voxels exactly 0 or 1,
    saved as NIfTI files and read back."""
    rng = np.random.default_rng(0)
    fractions = rng.dirichlet([1, 1, 1], size=SHAPE)  # include, exclude, white matter
    fractions[0, 0, :] = (0, 0, 1)
    fractions[1, 1, 1], fractions[2, 2, 2] = (1, 0, 0), (0, 1, 0)
    folder = tmp_path_factory.mktemp("maps")
    for i, name in enumerate(("include", "exclude")):
        nib.save(nib.Nifti1Image(fractions[..., i].astype(np.float32), AFFINE), folder / f"{name}.nii.gz")
    return tuple(np.asarray(nib.load(folder / f"{name}.nii.gz").dataobj) for name in ("include", "exclude"))


def points_in_and_around(nb: int) -> np.ndarray:
    """Points over the volume and up to one voxel past it, voxel centres included."""
    rng = np.random.default_rng(1)
    points = rng.uniform(-1.5, np.array(SHAPE) + 0.5, (nb, 3))
    return np.concatenate([points, np.indices(SHAPE).reshape(3, -1).T.astype(float)])


def test_act_statuses_equal_dipys(maps):
    include, exclude = maps
    points = points_in_and_around(3000)
    dipy = ActStoppingCriterion(include.astype(np.float64), exclude.astype(np.float64))
    expected = np.array([int(dipy.check_point(p)) for p in points])
    ours = TissueMaps(torch.from_numpy(include), torch.from_numpy(exclude), "act").status(
        torch.from_numpy(points).float())
    assert set(expected) == {-1, 0, 1, 2}
    np.testing.assert_array_equal(ours.numpy(), expected)


@pytest.mark.parametrize("step_mm", [0.5, 2.0])
def test_cmc_status_frequencies_equal_dipys(maps, step_mm):
    """At points where dipy's decision is random, the frequency of each status over many draws
    matches dipy's (its own random generator) within 5 standard deviations; elsewhere, every status."""
    include, exclude = maps
    voxel_mm = 2.0
    dipy = CmcStoppingCriterion(include.astype(np.float64), exclude.astype(np.float64), step_mm, voxel_mm)
    cmc = TissueMaps(torch.from_numpy(include), torch.from_numpy(exclude), "cmc", step_mm / voxel_mm)
    generator = torch.Generator().manual_seed(0)
    nb = 4000
    points = np.array([[3.3, 2.6, 1.2], [5.5, 4.1, 3.7], [1.0, 1.0, 1.0], [0.0, 0.0, 2.0], [2.0, 2.0, 2.0],
                       [-0.7, 3.0, 3.0], [4.2, 0.7, 5.4]])
    for point in points:
        theirs = np.array([int(dipy.check_point(point)) for _ in range(nb)])
        ours = cmc.status(torch.from_numpy(np.tile(point, (nb, 1))).float(), generator).numpy()
        for status in Tissue:
            p = (theirs == status).mean()
            tolerance = 5 * np.sqrt(max(p * (1 - p), 1 / nb) / nb) * np.sqrt(2)
            assert abs((ours == status).mean() - p) <= tolerance, (point, status)


def test_maps_must_share_a_shape_and_a_rule():
    with pytest.raises(DwimlError, match="differ in shape"):
        TissueMaps(torch.zeros(3, 3, 3), torch.zeros(3, 3, 4))
    with pytest.raises(DwimlError, match="one of \\['act', 'cmc'\\]"):
        TissueMaps(torch.zeros(3, 3, 3), torch.zeros(3, 3, 3), "pft")


def test_interface_seeds(maps):
    """The interface, checked voxel by voxel against its 6 neighbours; seeds lie in it."""
    wm = np.random.default_rng(2).uniform(size=SHAPE)
    gm = 1 - wm
    interface = interface_mask(wm, gm)
    for voxel in np.ndindex(SHAPE):
        neighbours = [tuple(np.add(voxel, d)) for d in np.vstack([np.eye(3, dtype=int), -np.eye(3, dtype=int)])]
        near_gm = any(all(0 <= c < n for c, n in zip(v, SHAPE)) and gm[v] >= 0.5 for v in neighbours)
        assert interface[voxel] == (wm[voxel] >= 0.5 and near_gm), voxel
    assert 0 < interface.sum() < (wm >= 0.5).sum()
    seeds = seeds_in_mask(torch.from_numpy(interface), seeds_per_voxel=3).numpy()
    assert interface[tuple(np.floor(seeds + 0.5).astype(int).T)].all() and len(seeds) == 3 * interface.sum()
    with pytest.raises(DwimlError, match="differ in shape"):
        interface_mask(wm, gm[:-1])


# ---- the tracker, with a model that goes along +x everywhere ----

LINE_SHAPE = (30, 5, 5)
STEP_MM = 0.7


def straight_model(tmp_path):
    """A small Learn2Track whose cosine head outputs +x at every point."""
    cfg = compose_run(tmp_path, tmp_path, ["model/head=cosine", "model.hidden_sizes=[4]"])
    model = build_model({**OmegaConf.to_container(cfg.model, resolve=True), "input_size": 1})
    with torch.no_grad():
        model.head.layers[-1].weight.zero_()
        model.head.layers[-1].bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
    return model.eval()


@pytest.mark.parametrize("rule", ["act", "cmc"])
def test_tracked_streamlines_end_where_dipy_says(tmp_path, rule):
    """Straight streamlines along +x through an exclude slab then an include slab (smooth edges):
    the kept ones are exactly the seeds from which dipy's criterion, checked at each step along the
    same line, reaches ENDPOINT, and their last point is the first ENDPOINT (ACT: deterministic;
    CMC: random, but past the exclude slab no draw can reject, and in the include map every stop
    is an ENDPOINT)."""
    x = np.arange(LINE_SHAPE[0])[:, None, None] * np.ones(LINE_SHAPE)
    exclude = np.clip(1 - np.abs(x - 10) / 2, 0, 1).astype(np.float32)  # peaks at x = 10
    include = np.clip((x - 20) / 3, 0, 1).astype(np.float32)  # rises from x = 20 to 23
    nib.save(nib.Nifti1Image(include, np.eye(4)), tmp_path / "include.nii.gz")
    include = np.asarray(nib.load(tmp_path / "include.nii.gz").dataobj)
    seeds = torch.stack([torch.linspace(2, 18, 60), torch.full((60,), 2.0), torch.full((60,), 2.2)], dim=1)
    maps = TissueMaps(torch.from_numpy(include), torch.from_numpy(exclude), rule, STEP_MM / 1.0)
    options = TrackingOptions(step_size_mm=STEP_MM, max_angle_deg=30, min_length_mm=0, max_length_mm=40,
                              bidirectional=False)
    tracker = Tracker(straight_model(tmp_path), volume_inputs(torch.zeros((*LINE_SHAPE, 1))),
                      torch.ones(LINE_SHAPE), torch.ones(3), options, maps)
    tracked = tracker.track(seeds)
    dipy = (ActStoppingCriterion(include.astype(float), exclude.astype(float)) if rule == "act" else
            CmcStoppingCriterion(include.astype(float), exclude.astype(float), STEP_MM, 1.0))
    expected = []
    for seed in seeds.double().numpy():
        line = seed + np.arange(1, 60)[:, None] * np.array([STEP_MM, 0, 0])
        statuses = [int(dipy.check_point(p)) for p in line]
        end = next(i for i, s in enumerate(statuses) if s != Tissue.TRACK)
        if statuses[end] == Tissue.INCLUDED and (rule == "act" or seed[0] > 12):
            expected.append(np.vstack([seed, line[:end + 1]]))
    kept = tracked.as_list()
    nowhere = TissueMaps(torch.zeros(LINE_SHAPE), torch.from_numpy(exclude), rule, STEP_MM / 1.0)
    leaving = Tracker(tracker.model, tracker.inputs, torch.ones(LINE_SHAPE), torch.ones(3), options, nowhere)
    assert len(leaving.track(seeds[seeds[:, 0] > 12]).lengths) == 0  # left the volume (dipy's OUTSIDEIMAGE): rejected
    if rule == "act":
        assert len(kept) == len(expected) > 10
        for ours, theirs in zip(kept, expected):
            np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-4)
    else:
        beyond = [s for s, seed in zip(kept, tracked.seeds) if seed[0] > 12]
        assert len(beyond) == len(expected) == int((seeds[:, 0] > 12).sum())
        assert len(kept) < len(seeds)  # some that cross the exclude slab are rejected
        for ours in kept:  # every kept streamline ends in the include map (dipy: > 0 there)
            assert dipy.get_include(ours[-1].double().numpy()) > 0
