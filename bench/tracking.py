"""Tracking speed: dwiml's batched tracker (a Learn2Track LSTM of the default architecture) with 1, 100,
1,000 and 10,000 streamlines advancing together, against dipy's deterministic LocalTracking (CSD peaks,
fitted once, not timed), on the phantom's testing subject, from the same seeds, with the same rules.

Streamlines per second = seeds tracked (both directions, before the length filter) per second; medians
of ``--repeats`` runs, measured in one process. Usage:
    python bench/tracking.py --run RUN_FOLDER [--cache-dir DIR] [--device cpu] [--threads 1] [--max-load L]
(RUN_FOLDER: e.g. a run of ``python train.py experiment=phantom_tracking``.)
"""
from __future__ import annotations

import argparse
import os
import time

import nibabel as nib
import numpy as np
import torch
from dipy.core.gradients import gradient_table
from dipy.io.gradients import read_bvals_bvecs

from dwiml.data.builtin import phantom_hdf5
from dwiml.data.hdf5 import read_subject_list
from dwiml.tracking.baseline import csd_peaks, track_dipy
from dwiml.tracking.seeds import seeds_in_mask
from dwiml.tracking.subject import load_tracking_model, subject_from_hdf5
from dwiml.tracking.tracker import Tracker, TrackingOptions, volume_inputs
from timing import add_machine_options, begin, finish, median_seconds  # bench/, the script's folder, is on sys.path

BATCH_SIZES = (1, 100, 1000, 10_000)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", required=True, help="a run folder of a Learn2Track model")
    parser.add_argument("--cache-dir", default=os.environ.get("DWIML_CACHE_DIR", "~/.cache/dwiml"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    add_machine_options(parser)
    args = parser.parse_args()
    threads = begin(args)

    hdf5 = phantom_hdf5(args.cache_dir)
    name = read_subject_list(hdf5.parent / "subjects" / "testing_subjects.txt")[0]
    folder = hdf5.parent / "subjects" / name
    subject = subject_from_hdf5(hdf5, name, "input", str(folder / "seeding_mask.nii.gz"), "wm_mask")
    options = TrackingOptions(step_size_mm=1.0, max_angle_deg=30.0, min_length_mm=10.0, max_length_mm=200.0)
    seeds = seeds_in_mask(torch.from_numpy(subject.seeding_mask), nb_seeds=max(BATCH_SIZES), rng_seed=1234)
    model = load_tracking_model(args.run, args.device).model
    volume = torch.from_numpy(subject.input).to(args.device)
    print(f"phantom subject {name}, {type(model).__name__} {model.rnn_type} {model.hidden_sizes}, "
          f"device {args.device}, torch threads {torch.get_num_threads()}, median of {args.repeats}")

    rates = {}
    for batch_size in BATCH_SIZES:
        nb = max(batch_size, 50)  # at least 50 seeds; one streamline at a time is slow
        tracker = Tracker(model, volume_inputs(volume), torch.from_numpy(subject.tracking_mask), subject.voxel_sizes,
                          TrackingOptions(**{**vars(options), "batch_size": batch_size}))
        tracked = tracker.track(seeds[:nb])
        seconds = median_seconds(lambda: tracker.track(seeds[:nb]), args.repeats)
        rates[batch_size] = nb / seconds
        print(f"dwiml, {batch_size:>6} advancing together: {nb:>6} seeds in {seconds:7.3f} s = "
              f"{rates[batch_size]:9.1f} streamlines/s ({len(tracked.lengths)} kept, "
              f"{tracked.lengths.float().mean():.1f} points on average)")

    dwi = nib.load(folder / "dwi.nii.gz")
    bvals, bvecs = read_bvals_bvecs(str(folder / "dwi.bval"), str(folder / "dwi.bvec"))
    mask = subject.tracking_mask > 0
    start = time.perf_counter()
    peaks = csd_peaks(np.asarray(dwi.dataobj, dtype=np.float32), gradient_table(bvals, bvecs=bvecs), mask)
    fit_seconds = time.perf_counter() - start
    rules = (options.step_size_mm, options.max_angle_deg, options.min_length_mm, options.max_length_mm)
    seeds_np = seeds.numpy()
    sft = track_dipy(peaks, mask, seeds_np, dwi, *rules)
    seconds = median_seconds(lambda: track_dipy(peaks, mask, seeds_np, dwi, *rules), args.repeats)
    dipy_rate = len(seeds_np) / seconds
    print(f"dipy LocalTracking (deterministic, CSD peaks fitted once in {fit_seconds:.1f} s, not timed): "
          f"{len(seeds_np)} seeds in {seconds:.3f} s = {dipy_rate:.1f} streamlines/s ({len(sft)} kept)")
    for batch_size, rate in rates.items():
        print(f"ratio dwiml ({batch_size:>6} together) / dipy: {rate / dipy_rate:.3g}")
    finish(args, threads)


if __name__ == "__main__":
    main()
