"""Model speed on the CPU, for every model preset: a training step (forward + backward) per 1,000
points, a tracking step for 1,000 streamlines, and the Transformers' cached tracking step against
recomputing the whole prefix (what a tracker without a cache does).

Prints medians measured side by side in one run, and the ratios. Usage:
    python bench/models.py [--streamlines 1000] [--prefix 50] [--features 28] [--threads 1] [--max-load L]

On a machine shared by other busy processes, ``--threads 1`` avoids torch's threads waiting on
each other (two threads on an oversubscribed CPU made a small linear layer 250x slower here).
"""
from __future__ import annotations

import argparse

import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from dwiml.config.schema import register_configs
from dwiml.models.io import build_model
from timing import add_machine_options, begin, finish, median_seconds  # bench/, the script's folder, is on sys.path

MODELS = ("lstm", "gru", "transformer", "transformer_src", "transformer_srctgt", "autoencoder")


def preset(name: str, input_size: int) -> torch.nn.Module:
    with initialize_config_module("dwiml.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}"])
    return build_model({**OmegaConf.to_container(cfg.model, resolve=True), "input_size": input_size})


def training_step_seconds(model: torch.nn.Module, inputs: torch.Tensor, lengths: torch.Tensor,
                          dirs: torch.Tensor, repeats: int) -> float:
    model.train()

    def step():
        model.zero_grad(set_to_none=True)
        if dirs is None:  # the autoencoder
            loss, _ = model.compute_loss(model(inputs, lengths), inputs)
        else:
            loss, _ = model.compute_loss(model(inputs, lengths, dirs), dirs)
        loss.backward()

    return median_seconds(step, repeats)


@torch.no_grad()
def tracking_seconds(model: torch.nn.Module, nb: int, prefix: int, features: int, repeats: int) -> tuple[float, float]:
    """A cached step after ``prefix`` points, and the full forward over ``prefix + 1`` points."""
    model.eval()
    inputs, dirs = torch.randn(nb, prefix + 1, features), torch.randn(nb, prefix + 1, 3)
    state = model.initial_state(nb, "cpu")
    for t in range(prefix):
        _, state = model.track_step(inputs[:, t], dirs[:, t - 1] if t else torch.zeros(nb, 3), state)
    cached = median_seconds(lambda: model.track_step(inputs[:, prefix], dirs[:, prefix - 1], state), repeats)
    lengths = torch.full((nb,), prefix + 1)
    full = median_seconds(lambda: model(inputs.flatten(0, 1), lengths, dirs.flatten(0, 1)), repeats)
    return cached, full


def main() -> None:
    register_configs()
    parser = argparse.ArgumentParser()
    parser.add_argument("--streamlines", type=int, default=1000, help="tracked together")
    parser.add_argument("--prefix", type=int, default=50, help="points already tracked")
    parser.add_argument("--features", type=int, default=28, help="input size (SH order 6)")
    parser.add_argument("--train-streamlines", type=int, default=50)
    parser.add_argument("--train-points", type=int, default=100, help="points per training streamline")
    parser.add_argument("--repeats", type=int, default=5)
    add_machine_options(parser)
    args = parser.parse_args()
    threads = begin(args)
    torch.manual_seed(0)
    nb_points = args.train_streamlines * args.train_points
    print(f"CPU, {torch.get_num_threads()} threads, median of {args.repeats}; training batch: "
          f"{args.train_streamlines} streamlines x {args.train_points} points; tracking: "
          f"{args.streamlines} streamlines after {args.prefix} points")
    print(f"{'model':20s} {'train ms/1k points':>19s} {'track step ms':>14s} {'full prefix ms':>15s} "
          f"{'full/cached':>12s}")
    for name in MODELS:
        if name == "autoencoder":
            model = preset(name, 3)
            lengths = torch.full((args.train_streamlines,), model.nb_points)
            points = torch.randn(args.train_streamlines * model.nb_points, 3)
            train = training_step_seconds(model, points, lengths, None, args.repeats) / len(points) * 1000
            print(f"{name:20s} {train * 1000:19.2f} {'-':>14s} {'-':>15s} {'-':>12s}")
            continue
        model = preset(name, args.features)
        lengths = torch.full((args.train_streamlines,), args.train_points)
        train = training_step_seconds(model, torch.randn(nb_points, args.features), lengths,
                                      torch.randn(nb_points, 3), args.repeats) / nb_points * 1000
        cached, full = tracking_seconds(model, args.streamlines, args.prefix, args.features, args.repeats)
        ratio = f"{full / cached:12.1f}" if name.startswith("transformer") else f"{'-':>12s}"
        full_ms = f"{full * 1000:15.1f}" if name.startswith("transformer") else f"{'-':>15s}"
        print(f"{name:20s} {train * 1000:19.2f} {cached * 1000:14.2f} {full_ms} {ratio}")
    finish(args, threads)


if __name__ == "__main__":
    main()
