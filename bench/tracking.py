"""Tracking speed: dwiml's batched tracker (a Learn2Track LSTM: a run's model, or the lstm preset with random
weights) with 1, 100, 1,000 and 10,000 streamlines advancing together, against dipy's deterministic
LocalTracking (CSD peaks, fitted once, not timed), on the phantom's testing subject, from the same seeds,
with the same rules.

Streamlines per second = seeds tracked (both directions, before the length filter) per second; medians
of ``--repeats`` runs, measured in one process. Per tracking step (one ``track_step`` call, replaying the
first half included): the whole step (the median interval between model calls, and the mean), and beside it the model (``track_step`` and the head's direction),
the interpolation and the stopping rules timed alone on the same rows; bookkeeping is the rest. At 10,000
together, the model's arithmetic (counted by torch's FlopCounterMode) per second is compared with a bare
float32 matrix product measured in the same run (on the CPU, again with both on the process's CPU time,
robust to a shared machine). Targets: a step of 1 streamline <= 0.5 ms; at 10,000 together >= 40% of the
matrix product's GFLOP/s. Usage:
    python bench/tracking.py [--run RUN_FOLDER] [--cache-dir DIR] [--device cpu] [--skip-dipy] [--threads 1]
(RUN_FOLDER: e.g. a run of ``python train.py experiment=phantom_tracking``.)
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import nibabel as nib
import numpy as np
import torch
from dipy.core.gradients import gradient_table
from dipy.io.gradients import read_bvals_bvecs
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from dwiml.config.schema import register_configs
from dwiml.data.builtin import phantom_hdf5
from dwiml.data.hdf5 import read_subject_list
from dwiml.models.io import build_model
from dwiml.tracking.baseline import csd_peaks, track_dipy
from dwiml.tracking.seeds import seeds_in_mask
from dwiml.tracking.stopping import stop_reasons
from dwiml.tracking.subject import load_tracking_model, subject_from_hdf5
from dwiml.tracking.tracker import Tracker, TrackingOptions, volume_inputs
from timing import add_machine_options, begin, finish, median_seconds, median_seconds_each  # bench/ is on sys.path

BATCH_SIZES = (1, 100, 1000, 10_000)


class CountedSteps:
    """Wraps a model's ``track_step`` to count its calls and rows, and to time the intervals between
    consecutive calls (one tracking step each, the model included)."""

    def __init__(self, model: torch.nn.Module):
        self.track_step = model.track_step
        model.track_step = self
        self.reset()

    def reset(self) -> None:
        self.calls, self.rows, self.intervals, self._last = 0, 0, [], None

    def __call__(self, inputs, last_dirs, state):
        now = time.perf_counter()
        if self._last is not None:
            self.intervals.append(now - self._last)
        self.calls, self.rows, self._last = self.calls + 1, self.rows + len(inputs), now
        return self.track_step(inputs, last_dirs, state)


def lstm_preset(input_size: int, device: str) -> torch.nn.Module:
    register_configs()
    with initialize_config_module("dwiml.conf", version_base="1.3"):
        cfg = compose("train", overrides=["model=lstm"])
    torch.manual_seed(0)
    return build_model({**OmegaConf.to_container(cfg.model, resolve=True), "input_size": input_size}).to(device)


def matmul_gflops(device: str, repeats: int, size: int = 1024, clock=time.perf_counter) -> float:
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    return 2 * size ** 3 / median_seconds(lambda: torch.mm(a, b).sum().item(), repeats, clock) / 1e9


def parts_seconds(tracker: Tracker, model, points: torch.Tensor, repeats: int) -> dict[str, float]:
    """The model, the interpolation and the stopping rules of one step, each timed alone on ``points``."""
    o = tracker.options
    state = model.initial_state(len(points), points.device)
    inputs, previous = tracker.inputs(points), torch.zeros_like(points)
    step = torch.nn.functional.normalize(torch.randn_like(points), dim=1)
    lengths = torch.zeros(len(points), dtype=torch.float64, device=points.device)

    def model_step():
        outputs, _ = model.track_step(inputs, previous, state)
        return model.head.direction(outputs)

    with torch.no_grad():
        return median_seconds_each({
            "model": model_step,
            "interpolation": lambda: tracker.inputs(points),
            "stopping rules": lambda: stop_reasons(tracker.mask, points + step, previous, step, lengths,
                                                   o.max_angle_deg, o.max_length_mm, o.mask_interpolation),
        }, repeats)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", help="a run folder of a Learn2Track model (default: the lstm preset, random weights)")
    parser.add_argument("--skip-dipy", action="store_true", help="no dipy comparison (its CSD fit is slow)")
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
    volume = torch.from_numpy(subject.input).to(args.device)
    model = (load_tracking_model(args.run, args.device).model if args.run else
             lstm_preset(volume.shape[-1], args.device)).eval()
    counted = CountedSteps(model)
    gflops = matmul_gflops(args.device, 5 * args.repeats)
    print(f"phantom subject {name}, {type(model).__name__} {model.rnn_type} {model.hidden_sizes} "
          f"({'run ' + args.run if args.run else 'lstm preset, random weights'}), device {args.device}, "
          f"torch threads {torch.get_num_threads()}, median of {args.repeats}; float32 matrix product "
          f"{gflops:.1f} GFLOP/s")

    rates = {}
    for batch_size in BATCH_SIZES:
        nb = max(batch_size, 50)  # at least 50 seeds; one streamline at a time is slow
        tracker = Tracker(model, volume_inputs(volume), torch.from_numpy(subject.tracking_mask), subject.voxel_sizes,
                          TrackingOptions(**{**vars(options), "batch_size": batch_size}))
        tracked = tracker.track(seeds[:nb])
        counted.reset()
        seconds = median_seconds(lambda: tracker.track(seeds[:nb]), args.repeats)
        calls, rows = counted.calls / args.repeats, counted.rows / args.repeats
        rates[batch_size] = nb / seconds
        parts = parts_seconds(tracker, model, seeds[:batch_size].to(args.device), 5 * args.repeats)
        # A step: the median interval between model calls (timed like the parts: robust to a busy machine)
        step = statistics.median(counted.intervals)
        with FlopCounterMode(display=False) as flops, torch.no_grad():
            model.track_step(tracker.inputs(seeds[:1].to(args.device)), torch.zeros(1, 3, device=args.device),
                             model.initial_state(1, args.device))
        model_gflops = flops.get_total_flops() * rows / seconds / 1e9
        detail = ", ".join(f"{k} {1e3 * v:.3f} ms" for k, v in parts.items())
        print(f"dwiml, {batch_size:>6} advancing together: {nb:>6} seeds in {seconds:7.3f} s = "
              f"{rates[batch_size]:9.1f} streamlines/s ({len(tracked.lengths)} kept, "
              f"{tracked.lengths.float().mean():.1f} points on average); per step ({calls:.0f} steps, "
              f"{rows / calls:.0f} rows on average, mean {1e3 * seconds / calls:.3f} ms) median {1e3 * step:.3f} ms: "
              f"{detail}, bookkeeping "
              f"{1e3 * max(0.0, step - sum(parts.values())):.3f} ms (rows of {batch_size}); model arithmetic "
              f"{model_gflops:.2f} GFLOP/s = {model_gflops / gflops:.1%} of the matrix product", flush=True)
        if batch_size == 1:
            print(f"    one step of 1 streamline {1e3 * step:.3f} ms (target <= 0.5 ms)")
        if batch_size == 10_000:
            print(f"    10,000 together: {model_gflops / gflops:.1%} of the matrix product (target >= 40%)")
            if args.device == "cpu":  # both again on the process's CPU time: other processes on the cores do not count
                cpu_seconds = median_seconds(lambda: tracker.track(seeds[:nb]), args.repeats, time.process_time)
                cpu_ratio = model_gflops * seconds / cpu_seconds / matmul_gflops("cpu", 5 * args.repeats,
                                                                                 clock=time.process_time)
                print(f"    on CPU time: {nb} seeds in {cpu_seconds:.3f} s of CPU, {cpu_ratio:.1%} of the matrix "
                      f"product on CPU time")
    if args.skip_dipy:
        finish(args, threads)
        return

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
