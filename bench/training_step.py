"""A dwiml training step beside the cost of its model, for the lstm, gru and transformer presets.

On one loaded batch of the built-in phantom (in memory), prints medians measured side by side in
one run (the candidates take turns):

- the full step: the trainer's ``_train_batch`` (interpolation, forward, loss, backward, gradient
  clipping, optimizer step, per-batch bookkeeping);
- the bare model: forward, loss and backward on the same packed batch, inputs already interpolated;
- parts of the full step: interpolation, the optimizer step, the bookkeeping (the batch record
  gathered from the ranks and written to the batch metrics);
- for Learn2Track, its torch RNN layers alone (forward and backward on zero-padded sequences).

Targets: full step / model <= 1.5, bookkeeping < 5% of the step. Usage:
    python bench/training_step.py [--cache-dir DIR] [--batch-size 100] [--repeats 20] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_module

from dwiml.config.schema import register_configs
from dwiml.data.streamlines import point_streamline_ids
from dwiml.models.packing import pad
from dwiml.training import distributed as dist
from dwiml.training.run import build_trainer
from dwiml.training.stopping import StopRequests
from dwiml.training.trainer import BatchRecord, Trainer
from timing import add_machine_options, begin, finish, median_seconds_each  # bench/ is on sys.path

PRESETS = ("lstm", "gru", "transformer")


def trainer_for(preset: str, cache_dir: str, batch_size: int, run_dir: Path) -> Trainer:
    with initialize_config_module("dwiml.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"model={preset}", f"dataset.cache_dir={cache_dir}",
                                          f"sampler.batch_size={batch_size}", "trainer.progress_bar=false"])
    return build_trainer(cfg, run_dir)


def candidates(trainer: Trainer, stop: StopRequests) -> tuple[dict, int]:
    """The timed callables on one batch, and its number of points."""
    trainer.train_loader.sampler.set_epoch(0)
    batch = next(iter(trainer.train_loader))
    model, step, optimizer = trainer.model, trainer.step, trainer.optimizer
    model.train()
    (inputs, lengths, dirs), target_dirs, eos_targets, _ = step.model_inputs(batch)
    point_subjects = batch.subjects[point_streamline_ids(batch.lengths)]

    def bare_model():
        model.zero_grad(set_to_none=True)
        loss, _ = model.compute_loss(model(inputs, lengths, dirs), target_dirs, eos_targets)
        loss.backward()

    def bookkeeping():
        mine = BatchRecord(1.0, len(inputs), 0.0, 0.0, 1.0, 1.0, 0, 0, 0, 0)
        ranks = [BatchRecord(*row) for row in
                 dist.all_gather(torch.tensor(mine, dtype=torch.float64, device=trainer.device)).tolist()]
        trainer._record_batch(ranks)

    bare_model()  # gradients exist: the optimizer step below has work
    extra = {}
    if hasattr(model, "rnns"):  # Learn2Track: its torch RNN layers alone, on zero-padded sequences
        padded, _ = pad(torch.cat([inputs, torch.nn.functional.normalize(dirs, dim=1)], 1), lengths)

        def torch_rnns():
            model.zero_grad(set_to_none=True)
            x = padded
            for rnn in model.rnns:
                x, _ = rnn(x)
            x.sum().backward()
        extra["torch RNN layers alone"] = torch_rnns
    return {
        "full step": lambda: trainer._train_batch(batch, True, 0.0, stop),
        "model forward + loss + backward": bare_model,
        "interpolation": lambda: step.interpolate(batch, batch.points, point_subjects),
        "optimizer step": optimizer.step,
        "bookkeeping": bookkeeping,
        **extra,
    }, len(inputs)


def main() -> None:
    register_configs()
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache-dir", default=os.environ.get("DWIML_CACHE_DIR", "~/.cache/dwiml"))
    parser.add_argument("--batch-size", type=int, default=100, help="streamlines per batch")
    parser.add_argument("--repeats", type=int, default=20)
    add_machine_options(parser)
    args = parser.parse_args()
    args.cache_dir = str(Path(args.cache_dir).expanduser())
    threads = begin(args)
    print(f"phantom batch of {args.batch_size} streamlines, in memory, CPU, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}")
    with tempfile.TemporaryDirectory() as folder, StopRequests(None) as stop:
        for preset in PRESETS:
            trainer = trainer_for(preset, args.cache_dir, args.batch_size, Path(folder) / preset)
            torch.set_num_threads(args.threads)
            timed, nb_points = candidates(trainer, stop)
            times = median_seconds_each(timed, args.repeats)
            full, bare = times["full step"], times["model forward + loss + backward"]
            parts = ", ".join(f"{name} {1000 * s:.2f} ms" for name, s in times.items() if name not in
                              ("full step", "model forward + loss + backward"))
            print(f"{preset:12s} {nb_points} points: full step {1000 * full:7.2f} ms, model {1000 * bare:7.2f} ms, "
                  f"full / model {full / bare:4.2f} (target <= 1.5); bookkeeping "
                  f"{times['bookkeeping'] / full:5.1%} of the step (target < 5%); {parts}", flush=True)
    finish(args, threads)


if __name__ == "__main__":
    main()
