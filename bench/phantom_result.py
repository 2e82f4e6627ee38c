"""dwiml against dipy's deterministic tracking on the built-in phantom's testing subject, scored.

Trains a model with the ``phantom_tracking`` experiment preset (or uses ``--run``), tracks the testing
subject with it and with dipy (CSD + peaks + LocalTracking) from the same seeds
(``seeds_in_mask(seeding_mask, seeds_per_voxel=2, rng_seed=1234)``), the same tracking mask and the
same step, angle and length rules, scores both with the Tractometer scorer, and draws both
tractograms next to the ground truth. Usage:
    python bench/phantom_result.py [--run RUN_FOLDER] [--out-dir phantom_result] [--picture docs/phantom_tracking.png]
        [--threads 1] [--max-load L]
"""
from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import matplotlib
import numpy as np
import torch
from dipy.io.streamline import load_tractogram
from matplotlib.collections import LineCollection
from PIL import Image

from dwiml.data.builtin import phantom_hdf5
from dwiml.data.hdf5 import read_subject_list
from dwiml.data.phantom import SCORING_TOLERANCE_MM
from dwiml.evaluation.scoring import format_table, score_files
from dwiml.tracking.baseline import track_files
from dwiml.tracking.seeds import seeds_in_mask
from dwiml.tracking.subject import load_tracking_model, save_tracked, subject_from_hdf5, track_subject
from dwiml.tracking.tracker import TrackingOptions
from timing import add_machine_options, begin, finish  # bench/, the script's folder, is on sys.path

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def train(run_dir: Path, cache_dir: str, overrides: list[str]) -> None:
    env = {**os.environ, "DWIML_CACHE_DIR": cache_dir}
    subprocess.run([sys.executable, str(ROOT / "train.py"), "experiment=phantom_tracking",
                    f"hydra.run.dir={run_dir}", *overrides], check=True, env=env)


def draw(tractograms: dict[str, Path], reference: Path, path: Path) -> None:
    """Each tractogram projected on the axial (x, y) plane, segments coloured by direction (RGB = |xyz|)."""
    fig, axes = plt.subplots(1, len(tractograms), figsize=(4 * len(tractograms), 4.2))
    for ax, (title, file) in zip(axes, tractograms.items()):
        sft = load_tractogram(str(file), str(reference), bbox_valid_check=False)
        sft.to_vox()
        segments = np.concatenate([np.stack([s[:-1], s[1:]], axis=1) for s in sft.streamlines if len(s) > 1])
        vectors = segments[:, 1] - segments[:, 0]
        colours = np.abs(vectors) / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
        ax.add_collection(LineCollection(segments[:, :, :2], colors=colours, linewidths=0.4, alpha=0.6))
        shape = sft.dimensions
        ax.set(xlim=(-0.5, shape[0] - 0.5), ylim=(-0.5, shape[1] - 0.5), aspect="equal",
               title=f"{title} ({len(sft)} streamlines)", xticks=[], yticks=[])
        ax.set_facecolor("black")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=80)
    plt.close(fig)
    Image.open(buffer).convert("RGB").quantize(64).save(path, optimize=True)  # a small file for the docs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache-dir", default=os.environ.get("DWIML_CACHE_DIR", "~/.cache/dwiml"))
    parser.add_argument("--run", help="a trained run folder [train one with experiment=phantom_tracking]")
    parser.add_argument("--out-dir", default="phantom_result")
    parser.add_argument("--picture", default=str(ROOT / "docs" / "phantom_tracking.png"))
    parser.add_argument("overrides", nargs="*", help="training overrides on top of the preset")
    add_machine_options(parser)
    args = parser.parse_args()
    threads = begin(args)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = Path(args.run) if args.run else out / "run"
    if not args.run:
        train(run, args.cache_dir, args.overrides)

    hdf5 = phantom_hdf5(args.cache_dir)
    subjects = hdf5.parent / "subjects"
    name = read_subject_list(subjects / "testing_subjects.txt")[0]
    folder = subjects / name
    options = TrackingOptions(step_size_mm=1.0, max_angle_deg=30.0, min_length_mm=10.0, max_length_mm=200.0,
                              rng_seed=1234)
    rules = (options.step_size_mm, options.max_angle_deg, options.min_length_mm, options.max_length_mm)

    import nibabel as nib
    seeding = torch.from_numpy(np.asarray(nib.load(folder / "seeding_mask.nii.gz").dataobj))
    seeds = seeds_in_mask(seeding, seeds_per_voxel=2, rng_seed=options.rng_seed).numpy()
    start = time.perf_counter()
    dipy_path = track_files(folder / "dwi.nii.gz", folder / "dwi.bval", folder / "dwi.bvec",
                            folder / "wm_mask.nii.gz", seeds, out / "dipy_det.trk", *rules)
    dipy_seconds = time.perf_counter() - start

    model, spec, _ = load_tracking_model(run, "cpu")
    subject = subject_from_hdf5(hdf5, name, "input", str(folder / "seeding_mask.nii.gz"), "wm_mask")
    start = time.perf_counter()
    tracked = track_subject(model, spec, subject, options, seeds_per_voxel=2)
    dwiml_path = save_tracked(tracked, subject, out / "dwiml_det.trk")
    dwiml_seconds = time.perf_counter() - start
    assert np.allclose(seeds, seeds_in_mask(seeding, seeds_per_voxel=2, rng_seed=options.rng_seed).numpy())

    print(f"subject {name}: {len(seeds)} seeds (2 per voxel of the seeding mask, rng_seed 1234); "
          f"dipy CSD + peaks + LocalTracking {dipy_seconds:.1f} s, dwiml tracking {dwiml_seconds:.1f} s; "
          f"model {run}")
    bundles = sorted((folder / "bundles").glob("*.trk"))
    print(format_table(score_files([dipy_path, dwiml_path], bundles, folder / "endpoints_labels.nii.gz",
                                   endpoint_tolerance_mm=SCORING_TOLERANCE_MM)))
    truth = out / "ground_truth.trk"
    from dipy.io.streamline import save_tractogram
    from dipy.io.stateful_tractogram import StatefulTractogram
    gt = [load_tractogram(str(b), str(folder / "wm_mask.nii.gz")) for b in bundles]
    save_tractogram(StatefulTractogram([s for t in gt for s in t.streamlines], gt[0], gt[0].space), str(truth))
    draw({"ground truth": truth, "dipy deterministic": dipy_path, "dwiml deterministic": dwiml_path},
         folder / "wm_mask.nii.gz", Path(args.picture))
    print(f"picture -> {args.picture}")
    finish(args, threads)


if __name__ == "__main__":
    main()
