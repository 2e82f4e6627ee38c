"""Scoring on real files: a hand-built case checked voxel by voxel, the phantom's ground truth, random lines."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dipy.io.stateful_tractogram import Origin, Space
from dipy.io.streamline import load_tractogram

from dwiml.cli.score import main as score_main
from dwiml.data.phantom import SHAPE as PHANTOM_SHAPE
from dwiml.data.phantom import BUNDLE_DESIGNS, NB_STREAMLINES, make_phantom
from dwiml.evaluation.scoring import Packed, load_ground_truth, load_streamlines, score, score_files
from helpers import AFFINE, SHAPE, random_streamlines, save_trk


def straight(y: float, z: float, x0: float = 0.0, x1: float = 11.0) -> np.ndarray:
    x = np.linspace(x0, x1, int(abs(x1 - x0) * 2) + 1)
    return np.stack([x, np.full_like(x, y), np.full_like(x, z)], axis=1)


@pytest.fixture(scope="module")
def hand_built(tmp_path_factory) -> dict:
    """Four regions on the conftest grid (12, 10, 8), anisotropic flipped affine.

    Bundle ``a`` joins regions 1 and 2 (x = 0..1 and x = 10..11, y = 1..2, z = 1..2); bundle
    ``b`` joins regions 3 and 4 (same x, y = 6..7, z = 5..6). Each has 4 straight lines along x,
    so each ground-truth voxel map is 12 x 2 x 2 = 48 voxels.
    """
    root = tmp_path_factory.mktemp("hand_built")
    labels = np.zeros(SHAPE, dtype=np.int16)
    labels[0:2, 1:3, 1:3], labels[10:12, 1:3, 1:3] = 1, 2
    labels[0:2, 6:8, 5:7], labels[10:12, 6:8, 5:7] = 3, 4
    labels_path = root / "labels.nii.gz"
    nib.save(nib.Nifti1Image(labels, AFFINE), labels_path)
    truth = [
        save_trk(root / "a.trk", [straight(y, z) for y in (1.2, 1.8) for z in (1.2, 1.8)], labels_path),
        save_trk(root / "b.trk", [straight(y, z) for y in (6.2, 6.8) for z in (5.2, 5.8)], labels_path),
    ]
    detour = np.array([[0, 6.2, 5.2], [4, 6.2, 5.2], [4, 8.8, 5.2], [7, 8.8, 5.2], [7, 6.2, 5.2], [11, 6.2, 5.2]])
    candidate = [
        straight(1.2, 1.2), straight(1.2, 1.2)[::-1], straight(1.2, 1.2),  # valid a, one voxel row
        straight(1.2, 1.2, x1=8.9),  # ends at x = 8.9 (voxel 9), outside every region: no connection
        np.array([[0.0, 1.2, 1.2], [11.0, 6.2, 5.2]]),  # regions 1 -> 4: invalid
        detour,  # valid b, leaving its bundle through y = 8 and 9
        np.array([[11.0, 1.2, 1.2], [5.0, 1.2, 1.2], [10.2, 1.8, 1.8]]),  # regions 2 -> 2: invalid
    ]
    return {"labels": labels_path, "truth": truth, "candidate": save_trk(root / "cand.trk", candidate, labels_path)}


def test_hand_built_case(hand_built):
    results = score_files([hand_built["candidate"]], hand_built["truth"], hand_built["labels"])
    scores = results[str(hand_built["candidate"])]
    assert scores["streamlines"] == 7
    assert scores["valid_pct"] == pytest.approx(100 * 4 / 7)
    assert scores["invalid_pct"] == pytest.approx(100 * 2 / 7)
    assert scores["no_connection_pct"] == pytest.approx(100 * 1 / 7)
    assert scores["valid_bundles"] == 2 and scores["invalid_bundles"] == 2  # pairs (1, 4) and (2, 2)
    a, b = scores["bundles"]["a"], scores["bundles"]["b"]
    assert a["regions"] == [1, 2] and b["regions"] == [3, 4]
    assert a["valid_streamlines"] == 3 and b["valid_streamlines"] == 1
    # a: the three valid lines cross one row of 12 voxels, all inside the 48-voxel ground truth
    assert (a["overlap"], a["overreach"], a["f1"]) == pytest.approx((12 / 48, 0, 2 * 12 / (12 + 48)))
    # b: the detour crosses x = 0..4 and 7..11 at y = 6 (10 voxels), (4, 7) and (7, 7) inside the
    # ground truth (12 in all); (4, 8), (4, 9), (5, 9), (6, 9), (7, 9), (7, 8) outside (6): 18 voxels
    assert (b["overlap"], b["overreach"], b["f1"]) == pytest.approx((12 / 48, 6 / 48, 2 * 12 / (18 + 48)))
    assert scores["mean_overlap"] == pytest.approx(12 / 48)
    # connectivity over regions 1..4, upper triangle with diagonal, row by row
    reference = np.zeros((4, 4))
    reference[0, 1], reference[2, 3] = 4, 4
    candidate = np.zeros((4, 4))
    candidate[0, 1], candidate[2, 3], candidate[0, 3], candidate[1, 1] = 3, 1, 1, 1
    upper = np.triu_indices(4)
    assert scores["connectivity_correlation"] == pytest.approx(np.corrcoef(candidate[upper], reference[upper])[0, 1])
    assert scores["false_positive_connections"] == 2 and scores["false_negative_connections"] == 0
    assert scores["false_positive_connection_rate"] == pytest.approx(2 / 7)


def test_endpoint_tolerance_grows_regions(hand_built):
    # x voxels are 1.5 mm: 1.6 mm takes voxel 9 into region 2, so the short line becomes valid
    scores = score_files([hand_built["candidate"]], hand_built["truth"], hand_built["labels"],
                         endpoint_tolerance_mm=1.6)[str(hand_built["candidate"])]
    assert scores["no_connection_pct"] == 0 and scores["valid_pct"] == pytest.approx(100 * 5 / 7)
    assert scores["bundles"]["a"]["valid_streamlines"] == 4


def test_empty_candidate(hand_built):
    scores = score(Packed(np.zeros((0, 3)), np.zeros(0, dtype=np.int64)),
                   load_ground_truth(hand_built["truth"], hand_built["labels"]))
    assert scores["streamlines"] == 0 and scores["valid_pct"] == 0 and scores["valid_bundles"] == 0
    assert scores["mean_overlap"] == 0 and scores["connectivity_correlation"] is None
    assert scores["false_negative_connections"] == 2


@pytest.fixture(scope="module")
def phantom_subject(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantom") / "data"
    make_phantom(out, nb_subjects=3, seed=5)
    return out / "sub-02"


def test_ground_truth_scores_perfectly(phantom_subject, tmp_path):
    bundles = sorted((phantom_subject / "bundles").glob("*.trk"))
    labels = phantom_subject / "endpoints_labels.nii.gz"
    lines = [s for b in bundles
             for s in load_tractogram(str(b), str(labels), to_space=Space.VOX, to_origin=Origin.NIFTI).streamlines]
    whole = save_trk(tmp_path / "all.trk", lines, labels)
    scores = score_files([whole], bundles, labels)[str(whole)]
    assert scores["streamlines"] == len(BUNDLE_DESIGNS) * NB_STREAMLINES
    assert scores["valid_pct"] == 100 and scores["valid_bundles"] == len(BUNDLE_DESIGNS)
    assert scores["invalid_bundles"] == 0
    assert scores["mean_overlap"] == 1 and scores["mean_overreach"] == 0 and scores["mean_f1"] == 1
    assert scores["connectivity_correlation"] == pytest.approx(1.0)
    assert scores["false_positive_connections"] == 0 and scores["false_positive_connection_rate"] == 0


def test_random_lines_score_near_zero(phantom_subject, tmp_path):
    bundles = sorted((phantom_subject / "bundles").glob("*.trk"))
    labels = phantom_subject / "endpoints_labels.nii.gz"
    lines = random_streamlines(np.random.default_rng(0), 300, shape=PHANTOM_SHAPE)
    scores = score(load_streamlines(save_trk(tmp_path / "random.trk", lines, labels), labels),
                   load_ground_truth(bundles, labels))
    assert scores["streamlines"] == 300
    assert scores["valid_pct"] < 3 and scores["no_connection_pct"] > 80
    assert scores["mean_overlap"] < 0.1


def test_cli_table_json_and_errors(hand_built, tmp_path, capsys):
    out = tmp_path / "scores.json"
    score_main([str(hand_built["candidate"]), str(hand_built["truth"][0]), "--ground-truth",
                *map(str, hand_built["truth"]), "--labels", str(hand_built["labels"]), "--out-json", str(out)])
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["cand.trk", "a.trk"]
    assert table[2].split()[-2:] == [f"{100 * 4 / 7:.3f}", "100.000"]
    saved = json.loads(out.read_text())
    assert saved[str(hand_built["truth"][0])]["bundles"]["a"]["overlap"] == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.json"]  # no temporary file left

    with pytest.raises(SystemExit, match=r"dwiml-score: error: .*missing\.nii\.gz"):
        score_main([str(hand_built["candidate"]), "--ground-truth", str(hand_built["truth"][0]),
                    "--labels", str(tmp_path / "missing.nii.gz")])
    short = save_trk(tmp_path / "short.trk", [straight(1.2, 1.2, x1=8.9)] * 2, hand_built["labels"])
    with pytest.raises(SystemExit, match=r"dwiml-score: error: .*short\.trk: most streamlines"):
        score_main([str(hand_built["candidate"]), "--ground-truth", str(short), "--labels", str(hand_built["labels"])])
    (tmp_path / "other").mkdir()
    renamed = shutil.copy(hand_built["truth"][1], tmp_path / "other" / "a.trk")  # bundle b named a
    with pytest.raises(SystemExit, match=r"dwiml-score: error: ground-truth bundles need distinct file names"):
        score_main([str(hand_built["candidate"]), "--ground-truth", str(hand_built["truth"][0]), str(renamed),
                    "--labels", str(hand_built["labels"])])
    with pytest.raises(SystemExit, match=r"dwiml-score: error: two ground-truth bundles connect"):
        score_main([str(hand_built["candidate"]), "--ground-truth", *map(str, hand_built["truth"] * 2),
                    "--labels", str(hand_built["labels"])])
