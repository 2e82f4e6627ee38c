"""Loader throughput, lazy against in memory, and the loader's share of a training step.

Components are built from the default training config (Hydra compose API), as ``dwiml-train``
builds them, on two datasets: the built-in phantom, and volume-spanning data (5 subjects of
64^3 x 45 float32, 3,000 straight streamlines across the whole volume each, 1 mm steps, written to a
temporary HDF5: every batch's bounding box is the whole volume, as on real subjects). For each,
prints side by side in one run (medians over repeats):

1. batches/s and points/s of sample + load + augment (DataLoader) + interpolate (the step's
   volume retrieval and trilinear), lazy and in memory, with 0 and ``--workers`` workers, and
   lazy / in memory at 0 workers (target >= 50%);
2. for one training step of the default LSTM (forward, loss, backward, optimizer step) with
   ``--workers`` workers, the time the step waits for data and the time it computes (target < 10%);

and then 3. lazy reads of scattered streamlines in a large subject (10M points, written to a temporary
HDF5): dwiml's one read per subject (a union of row slices) against one read per streamline.

Usage:
    python bench/loader.py [--cache-dir DIR] [--batches 40] [--repeats 5] [--workers 2] [--threads 1] [--max-load L]
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import torch
import yaml
from dipy.io.stateful_tractogram import Origin, Space, StatefulTractogram
from dipy.io.streamline import save_tractogram
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from dwiml.config.build import build
from dwiml.config.schema import register_configs
from dwiml.data.hdf5 import create_hdf5, load_groups_config
from dwiml.data.lazy import HDF5Reader
from dwiml.data.streamlines import point_streamline_ids
from dwiml.models.io import build_model
from dwiml.training.run import _data_loader
from timing import add_machine_options, begin, finish, median_seconds_each


def spanning_hdf5(folder: Path, nb_subjects: int = 5, size: int = 64, nb_features: int = 45,
                  nb_streamlines: int = 3000) -> Path:
    """An HDF5 of subjects whose streamlines are straight lines from one face of the volume to the opposite one."""
    rng = np.random.default_rng(0)
    names = [f"span-{i}" for i in range(nb_subjects)]
    for name in names:
        subject = folder / name
        (subject / "bundles").mkdir(parents=True)
        image = nib.Nifti1Image(rng.normal(size=(size,) * 3 + (nb_features,)).astype(np.float32), np.eye(4))
        nib.save(image, subject / "input.nii")
        axes = rng.integers(0, 3, nb_streamlines)
        start, end = rng.uniform(0, size - 1, (2, nb_streamlines, 3))
        start[np.arange(nb_streamlines), axes], end[np.arange(nb_streamlines), axes] = 0, size - 1
        steps = np.arange(np.ceil(np.linalg.norm(end - start, axis=1).max()) + 1)
        unit = (end - start) / np.linalg.norm(end - start, axis=1, keepdims=True)
        lines = [np.clip(a + steps[:int(np.linalg.norm(b - a)) + 1, None] * u, 0, size - 1).astype(np.float32)
                 for a, b, u in zip(start, end, unit)]
        save_tractogram(StatefulTractogram(lines, image, Space.VOX, origin=Origin.NIFTI),
                        str(subject / "bundles" / "all.trk"), bbox_valid_check=False)
    groups = {"input": {"type": "volume", "files": ["input.nii"], "standardization": "none"},
              "streamlines": {"type": "streamlines", "files": ["bundles/*.trk"]}}
    (folder / "groups.yaml").write_text(yaml.safe_dump(groups))
    return create_hdf5(folder, load_groups_config(folder / "groups.yaml"), folder / "spanning.hdf5",
                       names, [], [])


def components(data: list[str], lazy: bool, workers: int):
    with initialize_config_module("dwiml.conf", version_base="1.3"):
        cfg = compose("train", overrides=[*data, f"dataset.lazy={lazy}", f"num_workers={workers}"])
    dataset = build(cfg.dataset)
    step = build(cfg.step, dataset=dataset, device=cfg.device)
    return cfg, dataset, _data_loader(cfg, dataset.training, shuffle=True), step


def batches(loader, count: int):
    """``count`` batches, epoch after epoch, as the trainer draws them."""
    def epochs():
        for epoch in itertools.count(1):
            loader.sampler.set_epoch(epoch)
            yield from loader
    return itertools.islice(epochs(), count)


def throughput(loader, step, count: int) -> tuple[float, int]:
    """Seconds and points for ``count`` batches: load, then interpolate every point."""
    start, points = time.perf_counter(), 0
    for batch in batches(loader, count):
        step.interpolate(batch, batch.points, batch.subjects[point_streamline_ids(batch.lengths)])
        points += len(batch.points)
    return time.perf_counter() - start, points


def training_split(loader, step, model, optimizer, count: int) -> tuple[float, float]:
    """Seconds waiting for batches and seconds computing, over ``count`` training steps."""
    wait = compute = 0.0
    it = batches(loader, count)
    while True:
        start = time.perf_counter()
        batch = next(it, None)
        ready = time.perf_counter()
        if batch is None:
            return wait, compute
        optimizer.zero_grad(set_to_none=True)
        loss, _ = step(model, batch)
        loss.backward()
        optimizer.step()
        wait, compute = wait + ready - start, compute + time.perf_counter() - ready


def loader_table(data: list[str], batches_per_repeat: int, repeats: int, workers: int) -> None:
    """Throughput, lazy and in memory, with 0 and ``workers`` workers."""
    print(f"{'mode':10s} {'workers':>7s} {'batches/s':>10s} {'points/s':>11s} {'HDF5 reads/batch':>17s}")
    rates = {}
    for lazy, nb_workers in itertools.product((False, True), (0, workers)):
        _, dataset, loader, step = components(data, lazy, nb_workers)
        throughput(loader, step, batches_per_repeat)  # warm-up: workers started, caches filled
        reads_before = dataset.reader.nb_reads if lazy else 0
        runs = [throughput(loader, step, batches_per_repeat) for _ in range(repeats)]
        seconds = statistics.median(s for s, _ in runs)
        points = statistics.median(p for _, p in runs)
        rates[lazy, nb_workers] = points / seconds
        reads = (dataset.reader.nb_reads - reads_before) / (batches_per_repeat * repeats) if lazy else 0
        shown = f"{reads:.1f}" if lazy and nb_workers == 0 else "in workers" if lazy else "-"  # counted here
        print(f"{'lazy' if lazy else 'in memory':10s} {nb_workers:7d} {batches_per_repeat / seconds:10.1f} "
              f"{points / seconds:11.0f} {shown:>17s}", flush=True)
        del loader  # stops its workers
    print(f"lazy / in memory, 0 workers: {rates[True, 0] / rates[False, 0]:.1%} (target >= 50%)")


def step_table(data: list[str], batches_per_repeat: int, repeats: int, workers: int) -> None:
    """The training step's wait for data against its computation, lazy and in memory."""
    for lazy in (False, True):
        cfg, dataset, loader, step = components(data, lazy, workers)
        if not lazy:
            print(f"training step of the default model ({OmegaConf.select(cfg, 'model.rnn_type')}), "
                  f"{workers} workers: time waiting for data vs computing")
        model_config = OmegaConf.to_container(cfg.model, resolve=True)
        model_config["input_size"] = step.input_size
        model = build_model(model_config)
        optimizer = build(cfg.optim)(model.parameters())
        training_split(loader, step, model, optimizer, batches_per_repeat)  # warm-up
        splits = [training_split(loader, step, model, optimizer, batches_per_repeat) for _ in range(repeats)]
        wait = statistics.median(w for w, _ in splits)
        compute = statistics.median(c for _, c in splits)
        share = statistics.median(w / (w + c) for w, c in splits)
        print(f"{'lazy' if lazy else 'in memory':10s} wait {wait / batches_per_repeat * 1e3:7.2f} ms/step, "
              f"compute {compute / batches_per_repeat * 1e3:7.2f} ms/step, data share {share:6.1%} (target < 10%)",
              flush=True)
        del loader


def main() -> None:
    register_configs()
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache-dir", default=os.environ.get("DWIML_CACHE_DIR", "~/.cache/dwiml"),
                        help="where the phantom is (or gets) generated [$DWIML_CACHE_DIR or ~/.cache/dwiml: %(default)s]")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    add_machine_options(parser)
    args = parser.parse_args()
    args.cache_dir = str(Path(args.cache_dir).expanduser())
    threads = begin(args, extra_threads=args.workers)
    print(f"{args.batches} batches per repeat, median of {args.repeats}; main process {torch.get_num_threads()} "
          f"torch threads", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        datasets = {f"phantom in {args.cache_dir}": [f"dataset.cache_dir={args.cache_dir}"],
                    "volume-spanning streamlines, 5 subjects of 64^3 x 45":
                        ["dataset=hdf5", f"dataset.hdf5_path={spanning_hdf5(Path(folder))}"]}
        for name, data in datasets.items():
            print(f"\n{name}")
            loader_table(data, args.batches, args.repeats, args.workers)
            step_table(data, args.batches, args.repeats, args.workers)
    scattered_reads(args.repeats)
    finish(args, threads)


def scattered_reads(repeats: int) -> None:
    """Streamlines drawn at random from one large subject: one union read vs one read per streamline."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(50, 150, 100_000)
    starts = np.cumsum(lengths) - lengths
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "points.h5"
        with h5py.File(path, "w") as h5:
            h5.create_dataset("points", data=rng.random((int(lengths.sum()), 3), dtype=np.float32))
        reader = HDF5Reader(path, cache_bytes=0)
        points = reader.dataset("points")
        print(f"\nscattered streamlines of one subject ({len(points):,} points, contiguous), median of {repeats}")
        for size in (100, 1000):
            ids = np.sort(rng.choice(len(lengths), size, replace=False))
            before = reader.nb_reads
            times = median_seconds_each({
                "union": lambda: reader.rows("points", starts[ids], lengths[ids]),
                "each": lambda: [points[a:a + n] for a, n in zip(starts[ids], lengths[ids])]}, repeats)
            reads = (reader.nb_reads - before) / repeats
            print(f"{size:5d} streamlines: dwiml {times['union'] * 1e3:7.2f} ms ({reads:.0f} read), one read per "
                  f"streamline {times['each'] * 1e3:7.2f} ms ({size} reads), ratio {times['each'] / times['union']:.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
