"""Tracking options on a model whose head gives known outputs everywhere: the EOS "max" rule
(against probabilities computed here with scipy), and the progress bar."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from dipy.data import get_sphere
from omegaconf import OmegaConf
from scipy.special import expit, softmax

from helpers import compose_run
from dwiml.errors import DwimlError
from dwiml.models.io import build_model
from dwiml.tracking.shards import Shard
from dwiml.tracking.tracker import Tracker, TrackingOptions, volume_inputs

SHAPE = (20, 12, 20)
DIRECTION = np.array([0.6, 0.0, 0.8])
NB_STEPS = 6


def constant_model(tmp_path, head: str, params: np.ndarray, eos_logit: float):
    """A small Learn2Track with the head preset ``head`` and an EOS output, whose last layer gives
    ``params`` and the EOS logit ``eos_logit`` at every point."""
    sphere = ["model.head.sphere=repulsion100"] if "sphere" in head else []
    cfg = compose_run(tmp_path, tmp_path, [f"model/head={head}", "model.hidden_sizes=[4]",
                                           "model.head.eos_weight=1", *sphere])
    model = build_model({**OmegaConf.to_container(cfg.model, resolve=True), "input_size": 2})
    last = model.head.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor(np.append(params, eos_logit), dtype=torch.float32))
    return model.eval()


def tracker(model, **options) -> Tracker:
    volume = torch.rand((*SHAPE, 2), generator=torch.Generator().manual_seed(0))
    options = TrackingOptions(**{"step_size_mm": 1.0, "max_angle_deg": 180.0, "min_length_mm": 0.0,
                                 "max_length_mm": float(NB_STEPS), "bidirectional": False, **options})
    return Tracker(model, volume_inputs(volume), torch.ones(SHAPE), torch.ones(3), options)


SEEDS = torch.tensor([10.0, 6.0, 10.0]) + torch.rand(50, 3, generator=torch.Generator().manual_seed(1)) - 0.5


@pytest.mark.parametrize("algo", ["det", "prob"])
@pytest.mark.parametrize("kappa", [2.0, 8.0])
def test_eos_max_stops_where_ending_is_the_most_probable_outcome(tmp_path, algo, kappa):
    """With direction probabilities q (softmax) and an EOS probability s, the streamline ends at the
    first step when s > (1 - s) max q, and never otherwise; a threshold of 0.5 never stops here."""
    logits = kappa * get_sphere(name="repulsion100").vertices @ DIRECTION
    best = softmax(logits).max()
    boundary = best / (1 + best)  # s = (1 - s) * best
    for factor, ends in ((0.8, False), (1.25, True)):
        eos_logit = float(np.log(factor * boundary / (1 - factor * boundary)))
        assert expit(eos_logit) < 0.5
        model = constant_model(tmp_path, "sphere_classification", logits, eos_logit)
        for rule in ("max", 0.5):
            lengths = tracker(model, algo=algo, eos_threshold=rule).track(SEEDS).lengths
            expected = 1 if rule == "max" and ends else NB_STEPS + 1
            assert lengths.tolist() == [expected] * len(SEEDS), (factor, rule)


def test_eos_max_needs_a_classification_head(tmp_path):
    model = constant_model(tmp_path, "cosine", DIRECTION, -5.0)
    with pytest.raises(DwimlError, match="'max' .* needs a classification head, not CosineRegression"):
        tracker(model, eos_threshold="max")
    for bad in (0.0, 1.0, "min"):
        with pytest.raises(DwimlError, match="eos_threshold: .* must be in \\(0, 1\\) or 'max'"):
            TrackingOptions(eos_threshold=bad)


class Terminal(io.StringIO):
    """A text stream that says it is a terminal, as a console's stderr does."""

    def isatty(self) -> bool:
        return True


def test_the_progress_bar_counts_seeds_and_kept_streamlines(tmp_path, monkeypatch):
    model = constant_model(tmp_path, "cosine", DIRECTION, -20.0)
    seeds = torch.rand(50, 3, generator=torch.Generator().manual_seed(2)) * torch.tensor(SHAPE) - 0.5
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    quiet = tracker(model, batch_size=20, min_length_mm=3.5).track(seeds)
    assert terminal.getvalue() == ""
    shown = tracker(model, batch_size=20, min_length_mm=3.5).track(seeds, progress=True)
    assert torch.equal(quiet.points, shown.points)
    final = terminal.getvalue().split("\r")[-1]
    assert "tracking" in final and "50/50" in final and f"kept={len(shown.lengths)}" in final
    assert 0 < len(shown.lengths) < len(seeds)  # those leaving the volume early are too short


@pytest.mark.parametrize("nb_seeds, batch_size, count", [(100, 20, 3), (101, 20, 3), (7, 10, 2), (50, 3, 50)])
def test_seed_shards_are_disjoint_whole_chunks_covering_every_seed(nb_seeds, batch_size, count):
    ranges = [Shard(i, count).seed_range(nb_seeds, batch_size) for i in range(1, count + 1)]
    assert [i for r in ranges for i in r] == list(range(nb_seeds))
    assert all(r.start % batch_size == 0 for r in ranges if len(r))
    sizes = [-(-len(r) // batch_size) for r in ranges]
    assert max(sizes) - min(sizes) <= 1  # chunks spread evenly
    assert Shard.parse(" 2 / 8") == Shard(2, 8)


def test_probabilistic_chunks_do_not_depend_on_the_shard(tmp_path):
    """A chunk tracked within its shard alone gives the streamlines it gives in the whole run."""
    model = constant_model(tmp_path, "sphere_classification", 2 * get_sphere(name="repulsion100").vertices @ DIRECTION,
                           -20.0)
    whole = tracker(model, algo="prob", batch_size=15).track(SEEDS)
    parts = [tracker(model, algo="prob", batch_size=15).track(SEEDS, shard=Shard(i, 2)) for i in (1, 2)]
    assert torch.equal(torch.cat([p.points for p in parts]), whole.points)
    assert torch.equal(torch.cat([p.seed_ids for p in parts]), whole.seed_ids) and len(whole.seed_ids) == len(SEEDS)
    first_steps = [p.points[:NB_STEPS + 1].diff(dim=0) for p in parts]  # the chunks draw different directions
    assert not torch.allclose(*first_steps)


@pytest.mark.parametrize("value, expected", [("max", "max"), ("0.3", 0.3), ("null", None)])
def test_generation_validation_takes_every_eos_rule(tmp_path, value, expected):
    cfg = compose_run(tmp_path, tmp_path, ["gv=default", f"gv.eos_threshold={value}"])
    assert cfg.gv.eos_threshold == expected
    TrackingOptions(eos_threshold=cfg.gv.eos_threshold)  # the rule GenerationValidation passes on
