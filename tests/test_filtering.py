"""Filtering tracked streamlines by the model's end-of-streamline probability at their two ends."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from helpers import compose_run
from dwiml.errors import DwimlError
from dwiml.models.io import build_model
from dwiml.tracking.filtering import end_eos_probabilities, keep_ended
from dwiml.tracking.tracker import Tracked, volume_inputs


def eos_model(cache_dir, tmp_path, eos_weight: float):
    cfg = compose_run(cache_dir, tmp_path, [f"model.head.eos_weight={eos_weight}", "step.add_eos_target=true"])
    config = OmegaConf.to_container(cfg.model, resolve=True)
    config["input_size"] = 4
    torch.manual_seed(0)
    return build_model(config).eval()


def stepwise_end_eos(model, inputs, line: torch.Tensor) -> float:
    """The EOS probability at the last point, the model fed one point at a time (its tracking path)."""
    state = model.initial_state(1, "cpu")
    previous = torch.zeros(1, 3)
    for i in range(len(line)):
        outputs, state = model.track_step(inputs(line[i:i + 1]), previous, state)
        if i + 1 < len(line):
            previous = line[i + 1:i + 2] - line[i:i + 1]
    return float(model.head.eos_probability(outputs)[0])


def test_end_probabilities_equal_the_tracking_path_and_filter_both_ends(cache_dir, tmp_path):
    model = eos_model(cache_dir, tmp_path, 1.0)
    generator = torch.Generator().manual_seed(1)
    volume = torch.rand(6, 6, 6, 4, generator=generator)
    inputs = volume_inputs(volume)
    lengths = torch.tensor([5, 2, 7])
    points = torch.rand(int(lengths.sum()), 3, generator=generator) * 4 + 0.5
    probabilities = end_eos_probabilities(model, inputs, points, lengths, batch_size=2)
    lines = torch.split(points, lengths.tolist())
    for b, line in enumerate(lines):
        assert probabilities[b, 1] == pytest.approx(stepwise_end_eos(model, inputs, line), abs=1e-5)
        assert probabilities[b, 0] == pytest.approx(stepwise_end_eos(model, inputs, line.flip(0)), abs=1e-5)

    threshold = float(probabilities.min(dim=1).values.median())
    kept = keep_ended(model, inputs, Tracked(points, lengths, torch.arange(3.0)[:, None].repeat(1, 3)), threshold)
    expected = (probabilities >= threshold).all(dim=1)
    assert kept.lengths.tolist() == lengths[expected].tolist() and kept.seeds[:, 0].tolist() == \
        torch.arange(3.0)[expected].tolist()
    assert torch.equal(kept.points, torch.cat([line for line, keep in zip(lines, expected) if keep]))


def test_a_model_without_eos_output_is_refused(cache_dir, tmp_path):
    model = eos_model(cache_dir, tmp_path, 0.0)
    with pytest.raises(DwimlError, match="no end-of-streamline output"):
        end_eos_probabilities(model, volume_inputs(torch.zeros(4, 4, 4, 4)), torch.zeros(2, 3), torch.tensor([2]))
    with pytest.raises(DwimlError, match=r"in \(0, 1\)"):
        keep_ended(model, volume_inputs(torch.zeros(4, 4, 4, 4)),
                   Tracked(torch.zeros(2, 3), torch.tensor([2]), torch.zeros(1, 3)), 1.5)
