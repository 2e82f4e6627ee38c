"""Learn2Track: packing, previous directions, saving and rebuilding without the training config."""
import json

import pytest
import torch
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

from dwiml.errors import DwimlError
from dwiml.models.io import build_model, load_model, save_model
from dwiml.models.packing import pack, unpack

CONFIG = {"_target_": "dwiml.models.learn2track.Learn2Track", "input_size": 5, "rnn_type": "lstm",
          "hidden_sizes": [8, 6], "nb_previous_dirs": 2, "skip_connections": True, "layer_norm": True,
          "head": {"_target_": "dwiml.models.heads.CosineRegression", "_partial_": True, "hidden_sizes": [4]}}


def test_pack_equals_torch_pack_sequence():
    lengths = torch.tensor([3, 6, 1, 4])
    x = torch.randn(int(lengths.sum()), 2)
    packed, index = pack(x, lengths)
    reference = pack_sequence(list(torch.split(x, lengths.tolist())), enforce_sorted=False)
    assert torch.equal(packed.data, reference.data) and torch.equal(packed.batch_sizes, reference.batch_sizes)
    assert torch.equal(unpack(packed.data, index), x)
    rnn = torch.nn.GRU(2, 3)
    ours = unpack(rnn(packed)[0].data, index)
    padded, _ = pad_packed_sequence(rnn(reference)[0], batch_first=True)
    expected = torch.cat([padded[i, :n] for i, n in enumerate(lengths.tolist())])
    torch.testing.assert_close(ours, expected)


def test_streamlines_are_independent_and_previous_directions_are_causal():
    torch.manual_seed(0)
    model = build_model(CONFIG).eval()
    lengths = torch.tensor([4, 7])
    inputs, dirs = torch.randn(11, 5), torch.randn(11, 3)
    out = model(inputs, lengths, dirs)
    alone = model(inputs[4:], lengths[1:], dirs[4:])
    torch.testing.assert_close(out[4:], alone)
    prev = model.previous_directions(dirs, lengths)
    assert torch.equal(prev[0], torch.zeros(6)) and torch.equal(prev[4], torch.zeros(6))
    torch.testing.assert_close(prev[6, :3], torch.nn.functional.normalize(dirs[5], dim=0))
    changed = dirs.clone()
    changed[8] += 1.0  # a later direction must not change earlier outputs
    torch.testing.assert_close(model(inputs, lengths, changed)[:9], out[:9])


def test_save_and_load_without_training_config(tmp_path):
    torch.manual_seed(1)
    model = build_model(CONFIG)
    save_model(model, CONFIG, tmp_path / "best_model")
    assert json.loads((tmp_path / "best_model" / "model_config.json").read_text()) == CONFIG
    loaded = load_model(tmp_path / "best_model")
    x, lengths, dirs = torch.randn(9, 5), torch.tensor([9]), torch.randn(9, 3)
    model.eval(), loaded.eval()
    torch.testing.assert_close(loaded(x, lengths, dirs), model(x, lengths, dirs))


def test_model_config_targets_must_be_modules(tmp_path):
    with pytest.raises(DwimlError, match="not a torch.nn.Module"):
        build_model({**CONFIG, "_target_": "os.system"})
    with pytest.raises(DwimlError, match="rnn_type"):
        build_model({**CONFIG, "rnn_type": "transformer"})
    with pytest.raises(DwimlError, match="not a model folder"):
        load_model(tmp_path)
