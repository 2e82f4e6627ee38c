"""dipy's deterministic baseline on a tiny phantom subject: a loadable tractogram that follows the rules."""
from __future__ import annotations

import nibabel as nib
import pytest
import numpy as np
import torch
from dipy.io.streamline import load_tractogram
from dipy.tracking.streamlinespeed import length

from dwiml.data.phantom import SCORING_TOLERANCE_MM, make_phantom
from dwiml.evaluation.scoring import score_files
from dwiml.tracking.baseline import track_files
from dwiml.tracking.seeds import seeds_in_mask


@pytest.mark.slow
def test_baseline_on_phantom_subject(tmp_path):
    make_phantom(tmp_path / "phantom", nb_subjects=3, seed=3)
    subject = tmp_path / "phantom" / "sub-02"
    seeding = np.asarray(nib.load(subject / "seeding_mask.nii.gz").dataobj)
    wm = np.asarray(nib.load(subject / "wm_mask.nii.gz").dataobj) > 0
    seeds = seeds_in_mask(torch.from_numpy(seeding), rng_seed=0).numpy()
    out = track_files(subject / "dwi.nii.gz", subject / "dwi.bval", subject / "dwi.bvec", subject / "wm_mask.nii.gz",
                      seeds, tmp_path / "dipy.trk", step_size_mm=1.0, max_angle_deg=30.0, min_length_mm=10.0,
                      max_length_mm=200.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dipy.trk", "phantom"]

    sft = load_tractogram(str(out), str(subject / "dwi.nii.gz"), bbox_valid_check=True)
    assert sft.is_bbox_in_vox_valid() and 0.3 * len(seeds) < len(sft) <= len(seeds)
    lengths = length(sft.streamlines)  # RAS mm
    assert lengths.min() >= 10.0 - 1e-4 and lengths.max() <= 200.0 + 1e-4  # float32 points
    sft.to_vox()
    sft.to_center()
    # each streamline's seed is one of the given seeds, in the seeding mask
    kept_seeds = sft.data_per_streamline["seeds"]
    distances = np.linalg.norm(kept_seeds[:, None] - seeds[None], axis=2).min(axis=1)
    assert distances.max() < 1e-3
    # inner points stay in the tracking mask (only an end point may have stepped out)
    points, nb_points = sft.streamlines.get_data(), sft.streamlines._lengths
    inner = np.ones(len(points), dtype=bool)
    inner[np.cumsum(nb_points) - nb_points] = inner[np.cumsum(nb_points) - 1] = False
    assert wm[tuple(np.floor(points[inner] + 0.5).astype(int).T)].all()

    scores = score_files([out], sorted((subject / "bundles").glob("*.trk")), subject / "endpoints_labels.nii.gz",
                         endpoint_tolerance_mm=SCORING_TOLERANCE_MM)[str(out)]
    assert scores["valid_bundles"] >= 6 and scores["valid_pct"] > 40 and scores["mean_overlap"] > 0.4


def test_probabilistic_baseline_differs_and_is_reproducible(tmp_path):
    make_phantom(tmp_path / "phantom", nb_subjects=3, seed=3)
    subject = tmp_path / "phantom" / "sub-02"
    seeds = seeds_in_mask(torch.from_numpy(np.asarray(nib.load(subject / "seeding_mask.nii.gz").dataobj)),
                          rng_seed=0).numpy()
    files = [subject / "dwi.nii.gz", subject / "dwi.bval", subject / "dwi.bvec", subject / "wm_mask.nii.gz", seeds]
    rules = {"step_size_mm": 1.0, "max_angle_deg": 30.0, "min_length_mm": 10.0, "max_length_mm": 200.0}
    tracked = [load_tractogram(str(track_files(*files, tmp_path / f"{name}.trk", **rules, algo=algo)),
                               str(subject / "dwi.nii.gz")).streamlines
               for name, algo in (("det", "det"), ("prob", "prob"), ("prob2", "prob"))]
    det, prob, again = (np.concatenate(list(t)) for t in tracked)
    assert np.array_equal(prob, again)  # the same seeds give the same probabilistic streamlines
    assert det.shape != prob.shape or not np.allclose(det, prob)
