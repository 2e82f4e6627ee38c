"""Transformer attention weights: the recording (explicit, non-fused) path gives the fused path's
outputs, in the full forward pass and in cached tracking steps, with causal weights summing to 1;
and dwiml-visualize-attention on a Transformer trained for a few batches on the phantom."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from dipy.io.streamline import load_tractogram
from matplotlib import image
from omegaconf import OmegaConf

from helpers import compose_run, run_training
from dwiml.cli import visualize_attention as attention_cli
from dwiml.data.hdf5 import read_subject_list
from dwiml.errors import DwimlError
from dwiml.models.io import build_model
from dwiml.data.builtin import phantom_hdf5

PRESETS = {"transformer": ["encoder0.self", "encoder1.self", "decoder0.self", "decoder0.cross", "decoder1.self",
                           "decoder1.cross"],
           "transformer_src": ["encoder0.self", "encoder1.self"],
           "transformer_srctgt": ["encoder0.self", "encoder1.self"]}


def transformer(tmp_path, preset: str):
    cfg = compose_run(tmp_path, tmp_path, [f"model={preset}"])
    torch.manual_seed(0)
    return build_model({**OmegaConf.to_container(cfg.model, resolve=True), "input_size": 5}).eval()


@pytest.mark.parametrize("preset", list(PRESETS))
def test_recorded_attention_gives_the_fused_outputs(tmp_path, preset):
    model = transformer(tmp_path, preset)
    lengths = torch.tensor([7, 3, 5])
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(int(lengths.sum()), 5, generator=generator)
    directions = torch.randn(int(lengths.sum()), 3, generator=generator)
    with torch.no_grad():
        fused = model(inputs, lengths, directions)
        with model.recording_attention() as recorded:
            explicit = model(inputs, lengths, directions)
    torch.testing.assert_close(explicit, fused, atol=1e-5, rtol=1e-5)
    assert list(recorded) == PRESETS[preset]
    for (weights,) in recorded.values():
        assert weights.shape == (3, model.nheads, 7, 7)
        torch.testing.assert_close(weights.sum(dim=-1), torch.ones(3, model.nheads, 7))
        assert torch.all(weights.triu(diagonal=1) == 0)  # causal: query i sees keys 0..i
    assert all(a.recorded is None for a in model.modules() if hasattr(a, "recorded"))  # the fused path again


def test_recorded_attention_in_cached_tracking_steps(tmp_path):
    model = transformer(tmp_path, "transformer")
    generator = torch.Generator().manual_seed(2)
    states = [model.initial_state(4, "cpu") for _ in range(2)]
    with torch.no_grad():
        for step in range(5):
            inputs, dirs = torch.randn(4, 5, generator=generator), torch.randn(4, 3, generator=generator)
            fused, states[0] = model.track_step(inputs, dirs, states[0])
            with model.recording_attention() as recorded:
                explicit, states[1] = model.track_step(inputs, dirs, states[1])
            torch.testing.assert_close(explicit, fused, atol=1e-5, rtol=1e-5)
            (weights,) = recorded["decoder1.cross"]
            assert weights.shape[:3] == (4, model.nheads, 1) and weights.shape[3] >= step + 1
            torch.testing.assert_close(weights[..., :step + 1].sum(dim=-1), torch.ones(4, model.nheads, 1))
    model.train()
    with pytest.raises(DwimlError, match="evaluation mode only"):
        with model.recording_attention():
            pass


@pytest.mark.slow
def test_visualize_attention_cli(cache_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_training(cache_dir, run_dir, ["model=transformer", "trainer.max_epochs=1",
                                      "trainer.max_batches_per_epoch_training=2",
                                      "trainer.max_batches_per_epoch_validation=1"])
    root = phantom_hdf5(cache_dir, nb_subjects=3).parent  # the fixture's draw (other tests add draws)
    subject = read_subject_list(root / "subjects" / "testing_subjects.txt")[0]
    out = tmp_path / "attention.trk"
    attention_cli.main([str(run_dir / "best_model"), str(out), "--hdf5", str(root / "phantom.hdf5"),
                        "--subject", subject, "--nb-streamlines", "2"])
    assert "2 streamlines, 6 attentions" in capsys.readouterr().out
    sft = load_tractogram(str(out), "same")
    assert len(sft) == 2
    assert sorted(sft.data_per_point) == sorted(name.replace(".", "_") for name in PRESETS["transformer"])
    for values, line in zip(sft.data_per_point["decoder0_cross"], sft.streamlines):
        values = values[:, 0]
        assert len(values) == len(line) and np.isnan(values[-1])  # the model does not see the last point
        assert np.all((values[:-1] > 0) & (values[:-1] <= 1))
        assert values[-2] == pytest.approx(1 / 1, rel=0) or values[-2] <= 1  # the last seen point: its own query
    for k in range(2):
        png = image.imread(tmp_path / "attention" / f"streamline_{k}.png")
        assert png.ndim == 3 and png.shape[0] > 100
    lstm_dir = tmp_path / "lstm"
    run_training(cache_dir, lstm_dir, ["trainer.max_epochs=1", "trainer.max_batches_per_epoch_training=1",
                                       "trainer.max_batches_per_epoch_validation=1"])
    with pytest.raises(SystemExit) as e:
        attention_cli.main([str(lstm_dir / "best_model"), str(tmp_path / "x.trk"), "--hdf5",
                            str(root / "phantom.hdf5"), "--subject", subject])
    assert "only the Transformers have attention weights" in e.value.code and not (tmp_path / "x.trk").exists()
