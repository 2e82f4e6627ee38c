"""The ROI-based reference protocol on streamlines drawn in a tiny volume, each designed to be a
valid streamline, a wrong-path connection (one criterion failed each), an invalid connection or no
connection; the winding and lengths against dipy's."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from dipy.tracking.metrics import winding as dipy_winding
from dipy.tracking.streamline import length as dipy_length

from dwiml.cli.score import main as score_main
from dwiml.data.coords import vox_to_mm
from dwiml.errors import DwimlError
from dwiml.evaluation.roi_scoring import lengths_mm, load_protocol, score_files_rois, winding
from dwiml.evaluation.scoring import Packed
from helpers import AFFINE, SHAPE, random_streamlines, save_trk


def box(x=slice(None), y=slice(None), z=slice(None)) -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    mask[x, y, z] = 1
    return mask


def path(*corners, nb: int = 11) -> np.ndarray:
    """A polyline through ``corners`` (voxel coordinates), ``nb`` points per leg (an even number of points on
    a straight line: none on its centroid, where the winding is undefined)."""
    return np.concatenate([np.linspace(a, b, nb, endpoint=False) for a, b in zip(corners[:-1], corners[1:])]
                          + [np.array(corners[-1:], float)])


def loop() -> np.ndarray:
    """From the head to the tail of bundle A through one full turn in the x-z plane (short, in its mask)."""
    t = np.linspace(0, 2 * np.pi, 25)
    circle = np.stack([6 - np.cos(t), np.full_like(t, 2), 4 + np.sin(t)], axis=1)
    return np.concatenate([path((0, 2, 4), (5, 2, 4)), circle, path((5, 2, 4), (11, 2, 4))])


CANDIDATE = {
    "VS A": [path((0, 2, z), (11, 2, z)) for z in (3, 4, 5)],
    "WPC A (leaves the all_mask)": [path((0, 2, 3), (5, 7, 3), (11, 2, 3))],
    "WPC A (too long)": [path((0, 1, 2), (11, 1, 2), (0, 1, 5), (11, 1, 6))],
    "WPC A (a loop)": [loop()],
    "VS B": [path((0, y, 3), (11, y, 3)) for y in (6, 7)],
    "WPC B (misses the any_mask)": [path((0, 7, 6), (11, 7, 6))],
    "IC A head - B head": [path((0, 2, 1), (1, 8, 1))] * 2,
    "IC A head - B tail": [path((0, 1, 7), (11, 8, 7))],
    "NC": [path((5, 2, 2), (6, 8, 2))] * 2 + [path((0, 3, 6), (6, 3, 6)), path((0, 1, 1), (1, 3, 1))],
    "NC, VS A with endpoints dilated once": [path((2, 3, 2), (11, 3, 2))],
}


@pytest.fixture
def protocol_files(tmp_path):
    rois = {"A_head": box(x=slice(0, 2), y=slice(0, 5)), "A_tail": box(x=slice(10, 12), y=slice(0, 5)),
            "B_head": box(x=slice(0, 2), y=slice(5, 10)), "B_tail": box(x=slice(10, 12), y=slice(5, 10)),
            "A_all": box(y=slice(0, 5)), "A_gt": box(y=slice(1, 4), z=slice(2, 6)),
            "B_any": box(x=slice(5, 7), y=slice(6, 8), z=3)}
    (tmp_path / "rois").mkdir()
    for name, mask in rois.items():
        nib.save(nib.Nifti1Image(mask, AFFINE), tmp_path / "rois" / f"{name}.nii.gz")
    save_trk(tmp_path / "B_gt.trk", [path((0, 6, 3), (11, 6, 3))], tmp_path / "rois" / "A_head.nii.gz")
    config = {"A": {"head": "rois/A_head.nii.gz", "tail": "rois/A_tail.nii.gz", "all_mask": "rois/A_all.nii.gz",
                    "gt_mask": "rois/A_gt.nii.gz", "length": [10, 40], "angle": 300},
              "B": {"head": "rois/B_head.nii.gz", "tail": "rois/B_tail.nii.gz", "any_mask": "rois/B_any.nii.gz",
                    "gt_mask": "B_gt.trk", "length": [10, 40]}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    lines = [line for group in CANDIDATE.values() for line in group]
    return tmp_path / "config.json", save_trk(tmp_path / "candidate.trk", lines, tmp_path / "rois" / "A_head.nii.gz")


def test_the_construction_holds_by_dipy():
    """The loop winds past the limit and the zigzag is too long, as dipy measures them."""
    assert dipy_winding(loop()) > 300 > dipy_winding(CANDIDATE["VS A"][0])
    assert dipy_length([vox_to_mm(CANDIDATE["WPC A (too long)"][0], AFFINE)])[0] > 40
    assert 10 < dipy_length([vox_to_mm(loop(), AFFINE)])[0] < 40


def test_counts_and_bundle_scores_known_by_construction(protocol_files):
    config, candidate = protocol_files
    scores = score_files_rois([candidate], config)[str(candidate)]
    total = 17
    assert scores["streamlines"] == total
    assert {k: scores[f"{k}_pct"] * total / 100 for k in ("VS", "WPC", "IC", "NC", "IS")} == \
        pytest.approx({"VS": 5, "WPC": 4, "IC": 3, "NC": 5, "IS": 12})
    assert (scores["VB"], scores["IB"]) == (2, 2)
    assert scores["invalid_bundles"] == {"A_head_B_head": 2, "A_head_B_tail": 1}
    a, b = scores["bundles"]["A"], scores["bundles"]["B"]
    assert (a["VS"], a["WPC"], b["VS"], b["WPC"]) == (3, 3, 2, 1)
    # A: its 3 VS cross 36 voxels, all inside its 144-voxel mask; B: 24 voxels, 12 of them its mask's 12.
    assert a == pytest.approx({"VS": 3, "WPC": 3, "OL": 0.25, "OR_pct_gt": 0.0, "OR_pct_vs": 0.0, "F1": 0.4})
    assert b == pytest.approx({"VS": 2, "WPC": 1, "OL": 1.0, "OR_pct_gt": 1.0, "OR_pct_vs": 0.5, "F1": 2 / 3})
    assert scores["mean_OL"] == pytest.approx(0.625) and scores["mean_F1"] == pytest.approx((0.4 + 2 / 3) / 2)
    dilated = score_files_rois([candidate], config, dilate_endpoints=1)[str(candidate)]
    assert dilated["VS_pct"] * total / 100 == pytest.approx(6) and dilated["bundles"]["A"]["VS"] == 4


def test_score_command_prints_and_writes_the_protocol(protocol_files, tmp_path, capsys):
    config, candidate = protocol_files
    score_main([str(candidate), "--bundle-config", str(config), "--out-json", str(tmp_path / "s.json")])
    table = capsys.readouterr().out
    assert "wrong-path connections WPC (%)" in table and "B: OR (/ recovered)" in table
    assert json.loads((tmp_path / "s.json").read_text())[str(candidate)]["VB"] == 2
    with pytest.raises(SystemExit, match="give either --ground-truth and --labels"):
        score_main([str(candidate), "--bundle-config", str(config), "--labels", str(config)])


@pytest.mark.parametrize("bundle,message", [
    ({"head": "rois/A_head.nii.gz"}, r"bundle 'X': missing \['tail'\]"),
    ({"endpoints": "rois/A_head.nii.gz"}, "give the two endpoint regions as 'head' and 'tail'"),
    ({"head": "rois/A_head.nii.gz", "tail": "rois/A_tail.nii.gz", "length": [50, 10]}, "min < max"),
    ({"head": "rois/A_head.nii.gz", "tail": "rois/A_tail.nii.gz", "all": "x"}, r"unknown key\(s\) \['all'\]"),
    ({"head": "rois/A_head.nii.gz", "tail": "rois/none.nii.gz"}, "bundle configuration .*: no file .*none.nii.gz"),
])
def test_bad_configurations_are_named(protocol_files, bundle, message):
    config, _ = protocol_files
    bad = config.with_name("bad.json")
    bad.write_text(json.dumps({"X": bundle}))
    with pytest.raises(DwimlError, match=message):
        load_protocol(bad)


def test_winding_and_lengths_equal_dipy():
    lines = [s.astype(np.float64) for s in random_streamlines(np.random.default_rng(2), 50)] + [loop()]
    packed = Packed(np.concatenate(lines), np.array([len(s) for s in lines]))
    np.testing.assert_allclose(winding(packed), [dipy_winding(s) for s in lines], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(lengths_mm(packed, AFFINE), dipy_length([vox_to_mm(s, AFFINE) for s in lines]),
                               rtol=1e-6)
