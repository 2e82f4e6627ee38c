"""dipy's classical deterministic tracking (CSD + peaks) on the built-in phantom's testing subject, scored.

Seeds are drawn with dwiml's seeder in the seeding mask; tracking stops on the white-matter
mask; the tractogram is scored against the subject's ground-truth bundles, with endpoint regions
grown by one voxel (the phantom's SCORING_TOLERANCE_MM). Usage:
    python bench/phantom_baseline.py [--cache-dir DIR] [--seeds-per-voxel 2] [--out baseline.trk] [--max-load L]
"""
from __future__ import annotations

import argparse
import os
import time

import nibabel as nib
import numpy as np
import torch

from dwiml.data.builtin import phantom_hdf5
from dwiml.data.hdf5 import read_subject_list
from dwiml.data.phantom import SCORING_TOLERANCE_MM
from dwiml.evaluation.scoring import format_table, score_files
from dwiml.tracking.baseline import track_files
from dwiml.tracking.seeds import seeds_in_mask
from timing import add_machine_options, begin, finish  # bench/, the script's folder, is on sys.path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache-dir", default=os.environ.get("DWIML_CACHE_DIR", "~/.cache/dwiml"))
    parser.add_argument("--seeds-per-voxel", type=int, default=2)
    parser.add_argument("--rng-seed", type=int, default=1234)
    parser.add_argument("--step-size-mm", type=float, default=1.0)
    parser.add_argument("--max-angle-deg", type=float, default=30.0)
    parser.add_argument("--min-length-mm", type=float, default=10.0)
    parser.add_argument("--max-length-mm", type=float, default=200.0)
    parser.add_argument("--out", default="phantom_dipy_det.trk")
    add_machine_options(parser)
    args = parser.parse_args()
    threads = begin(args)

    subjects = phantom_hdf5(args.cache_dir).parent / "subjects"
    subject = subjects / read_subject_list(subjects / "testing_subjects.txt")[0]
    seeding = torch.from_numpy(np.asarray(nib.load(subject / "seeding_mask.nii.gz").dataobj))
    seeds = seeds_in_mask(seeding, seeds_per_voxel=args.seeds_per_voxel, rng_seed=args.rng_seed).numpy()
    start = time.perf_counter()
    out = track_files(subject / "dwi.nii.gz", subject / "dwi.bval", subject / "dwi.bvec",
                      subject / "wm_mask.nii.gz", seeds, args.out, args.step_size_mm, args.max_angle_deg,
                      args.min_length_mm, args.max_length_mm)
    print(f"subject {subject.name}: {len(seeds)} seeds, CSD + peaks + LocalTracking in "
          f"{time.perf_counter() - start:.1f} s -> {out}")
    print(format_table(score_files([out], sorted((subject / "bundles").glob("*.trk")),
                                   subject / "endpoints_labels.nii.gz", endpoint_tolerance_mm=SCORING_TOLERANCE_MM)))
    finish(args, threads)


if __name__ == "__main__":
    main()
