"""Models: packing, embeddings, Learn2Track, Transformers, the autoencoder; tracking steps equal to
the full forward; saving and rebuilding without the training config; training every preset."""
import json
import math
import shutil

import numpy as np
import pytest
import torch
from dipy.io.stateful_tractogram import StatefulTractogram
from dipy.io.streamline import load_tractogram, save_tractogram
from dipy.tracking.streamline import set_number_of_points
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

from helpers import SUBJECTS, metrics, run_training
from dwiml.data.dataset import MultiSubjectDataset
from dwiml.data.hdf5 import create_hdf5, load_groups_config
from dwiml.data.loader import Batch
from dwiml.errors import DwimlError
from dwiml.models.embeddings import CNNEmbedding
from dwiml.models.interface import merge_streamlines, select_streamlines
from dwiml.models.io import build_model, load_model, save_model
from dwiml.models.learn2track import CPU_GATES_ROWS, lstm_step
from dwiml.models.packing import pack, pad, prefer_padded, unpack, unpad
from dwiml.models.transformer import Attention, sinusoidal_positions
from dwiml.tracking.subject import load_tracking_model
from dwiml.training.steps import OneInputStep

HEAD = {"_target_": "dwiml.models.heads.CosineRegression", "_partial_": True, "hidden_sizes": [4]}
LINEAR = {"_target_": "dwiml.models.embeddings.LinearEmbedding", "_partial_": True, "out_size": 7}
CONFIG = {"_target_": "dwiml.models.learn2track.Learn2Track", "input_size": 5, "rnn_type": "lstm",
          "hidden_sizes": [8, 6], "nb_previous_dirs": 2, "skip_connections": True, "layer_norm": True, "head": HEAD}
TRANSFORMER = {"_target_": "dwiml.models.transformer.Transformer", "input_size": 5, "d_model": 16, "nheads": 2,
               "nb_layers": 2, "ff_size": 24, "dropout": 0.0, "direction_embedding_size": 6, "head": HEAD}
TRACKING_MODELS = {
    "lstm": CONFIG,
    "gru_linear_embeddings": {**CONFIG, "rnn_type": "gru", "prev_dirs_embedding_size": 4, "input_embedding": LINEAR},
    "transformer": {**TRANSFORMER, "variant": "encoder_decoder", "nb_decoder_layers": 1},
    "transformer_src": {**TRANSFORMER, "variant": "encoder", "input_embedding": LINEAR},
    "transformer_srctgt": {**TRANSFORMER, "variant": "encoder_with_directions"},
}
ONE_SMALL_EPOCH = ["trainer.max_epochs=1", "trainer.max_batches_per_epoch_training=2",
                   "trainer.max_batches_per_epoch_validation=1"]
AUTOENCODER = {"_target_": "dwiml.models.autoencoder.StreamlineAutoencoder", "input_size": 3, "nb_points": 13,
               "latent_size": 5, "channels": [4, 8, 8]}


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


def test_pad_and_unpad_are_time_major_and_inverse():
    lengths = torch.tensor([3, 1, 2])
    x = torch.arange(6.0)[:, None]
    padded, index = pad(x, lengths)
    assert padded[..., 0].tolist() == [[0.0, 3.0, 4.0], [1.0, 0.0, 5.0], [2.0, 0.0, 0.0]]
    assert torch.equal(unpad(padded, index), x)
    assert prefer_padded(lengths) and not prefer_padded(torch.tensor([30, 1, 1, 1, 1]))


@pytest.mark.parametrize("name", ["lstm", "gru_linear_embeddings"])
def test_learn2track_padded_sequences_equal_packed_sequences(name):
    """The padded layout (the fast path) gives the outputs and gradients of the PackedSequence one."""
    torch.manual_seed(0)
    model = build_model(TRACKING_MODELS[name])
    lengths = torch.tensor([4, 9, 1, 6])
    inputs, dirs = torch.randn(20, 5), torch.randn(20, 3)
    results = {}
    for padded in (True, False):
        model.padded = padded
        model.zero_grad(set_to_none=True)
        out = model(inputs, lengths, dirs)
        out.square().sum().backward()
        results[padded] = out.detach(), [p.grad.clone() for p in model.parameters()]
    torch.testing.assert_close(results[True][0], results[False][0])
    for fast, reference in zip(results[True][1], results[False][1]):
        torch.testing.assert_close(fast, reference)


def test_previous_directions_are_unit_and_zero_before_the_start():
    model = build_model(CONFIG)
    dirs, lengths = torch.randn(11, 3), torch.tensor([4, 7])
    prev = model.previous_dirs.gather(dirs, lengths)
    assert torch.equal(prev[0], torch.zeros(6)) and torch.equal(prev[4], torch.zeros(6))
    assert torch.equal(prev[5, 3:], torch.zeros(3))
    torch.testing.assert_close(prev[6], torch.cat([dirs[5] / dirs[5].norm(), dirs[4] / dirs[4].norm()]))


@pytest.mark.parametrize("name", TRACKING_MODELS)
def test_streamlines_are_independent_and_the_model_is_causal(name):
    torch.manual_seed(0)
    model = build_model(TRACKING_MODELS[name]).eval()
    lengths = torch.tensor([4, 7])
    inputs, dirs = torch.randn(11, 5), torch.randn(11, 3)
    out = model(inputs, lengths, dirs)
    torch.testing.assert_close(out[4:], model(inputs[4:], lengths[1:], dirs[4:]))
    torch.testing.assert_close(out[:4], model(inputs[:4], lengths[:1], dirs[:4]))
    later_inputs, later_dirs = inputs.clone(), dirs.clone()
    later_inputs[8] += 1.0  # a later input (used from point 8) or direction (from point 9)
    later_dirs[8] += 1.0  # must not change earlier outputs
    torch.testing.assert_close(model(later_inputs, lengths, later_dirs)[:8], out[:8])
    torch.testing.assert_close(model(inputs, lengths, later_dirs)[:9], out[:9])
    assert not torch.allclose(model(later_inputs, lengths, dirs)[8], out[8])
    if name != "transformer_src":  # it does not use directions
        assert not torch.allclose(model(inputs, lengths, later_dirs)[9], out[9])


@pytest.mark.parametrize("name", TRACKING_MODELS)
def test_track_step_equals_the_full_forward(name):
    torch.manual_seed(0)
    model = build_model(TRACKING_MODELS[name]).eval()
    nb, length = 4, 40
    inputs, dirs = torch.randn(nb, length, 5), torch.randn(nb, length, 3)
    full = model(inputs.flatten(0, 1), torch.full((nb,), length), dirs.flatten(0, 1)).unflatten(0, (nb, length))
    state = model.initial_state(nb, "cpu")
    for t in range(length):
        last_dirs = dirs[:, t - 1] if t else torch.zeros(nb, 3)
        if t == 5:  # the tracker drops finished streamlines from the state
            state, inputs, dirs, full = select_streamlines(state, torch.tensor([0, 2])), inputs[[0, 2]], \
                dirs[[0, 2]], full[[0, 2]]
            last_dirs = last_dirs[[0, 2]]
        outputs, state = model.track_step(inputs[:, t], last_dirs, state)
        torch.testing.assert_close(outputs, full[:, t], atol=1e-5, rtol=0)


@pytest.mark.parametrize("rows", [CPU_GATES_ROWS - 1, CPU_GATES_ROWS])
def test_lstm_step_equals_torch_lstm_cell(rows):
    """Below CPU_GATES_ROWS rows lstm_step is torch's cell; from there on (the gates from one product,
    tanh from sigmoid), it equals it within float rounding, gradients included, saturated gates too."""
    torch.manual_seed(0)
    rnn = torch.nn.LSTM(5, 7)
    x, h, c = (3 * torch.randn(rows, n) for n in (5, 7, 7))
    results = []
    for step in (lstm_step, lambda *a: torch.lstm_cell(a[0], a[1:3], *rnn.parameters())):
        inputs = [t.clone().requires_grad_() for t in (x, h, c)]
        rnn.zero_grad(set_to_none=True)
        new_h, new_c = step(*inputs, rnn)
        (new_h.sin().sum() + new_c.cos().sum()).backward()
        results.append([new_h, new_c, *(t.grad for t in inputs), *(p.grad for p in rnn.parameters())])
    for ours, reference in zip(*results):
        torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(lstm_step(x, h, c, rnn), tuple(results[1][:2]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", TRACKING_MODELS)
def test_track_step_with_rows_at_different_points(name):
    """As the tracker's replay: rows start at different steps, a row not yet started is stepped on
    noise and given its old state back; each row's outputs equal the forward of its sequence alone.
    40 steps grow a Transformer's cache (32 points) before the third row starts."""
    torch.manual_seed(0)
    model = build_model(TRACKING_MODELS[name]).eval()
    starts, total = torch.tensor([0, 3, 34, 1]), 40
    lengths = total - starts
    inputs, dirs = torch.randn(len(starts), total, 5), torch.randn(len(starts), total, 3)
    expected = [model(inputs[b, :n], n[None], dirs[b, :n]) for b, n in enumerate(lengths)]
    rows = torch.arange(len(starts))
    state = model.initial_state(len(starts), "cpu")
    for t in range(total):
        local = t - starts[rows]
        started = local >= 0
        step_inputs = torch.where(started[:, None], inputs[rows, local.clamp(min=0)], torch.randn(len(rows), 5))
        previous = dirs[rows, (local - 1).clamp(min=0)] * (local > 0)[:, None]  # zeros at the first point
        last_dirs = torch.where(started[:, None], previous, torch.randn(len(rows), 3))
        outputs, new_state = model.track_step(step_inputs, last_dirs, state)
        state = merge_streamlines(new_state, state, started)
        for i, b in enumerate(rows.tolist()):
            if local[i] >= 0:
                torch.testing.assert_close(outputs[i], expected[b][local[i]], atol=1e-5, rtol=0)
        if t == 20:  # drop a streamline, as the tracker does
            state, rows = select_streamlines(state, torch.tensor([0, 2, 3])), rows[[0, 2, 3]]


def test_attention_equals_torch_multihead_attention_with_a_causal_mask():
    torch.manual_seed(0)
    ours = Attention(d_model=8, nheads=2, dropout=0.0)
    reference = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    with torch.no_grad():
        reference.in_proj_weight.copy_(torch.cat([ours.query.weight, ours.key_value.weight]))
        reference.in_proj_bias.copy_(torch.cat([ours.query.bias, ours.key_value.bias]))
        reference.out_proj.weight.copy_(ours.out.weight)
        reference.out_proj.bias.copy_(ours.out.bias)
    x = torch.randn(3, 6, 8)
    mask = torch.triu(torch.ones(6, 6, dtype=torch.bool), diagonal=1)
    expected, _ = reference(x, x, x, attn_mask=mask)
    torch.testing.assert_close(ours(x, x)[0], expected)


def test_sinusoidal_positions_closed_form():
    d = 6
    expected = [[math.sin(p / 10000 ** (i / d)) if i % 2 == 0 else math.cos(p / 10000 ** ((i - 1) / d))
                 for i in range(d)] for p in range(5)]
    torch.testing.assert_close(sinusoidal_positions(torch.arange(5), d), torch.tensor(expected))


def test_cnn_embedding_convolves_the_grid_neighborhood():
    """Rows built neighbour by neighbour from a volume give the convolution of that volume."""
    torch.manual_seed(0)
    width, features = 3, 2
    cnn = CNNEmbedding(width**3 * features, width=width, channels=[4], kernel_size=2)
    volume = torch.randn(features, 6, 6, 6)
    centres = [(1, 1, 1), (3, 2, 4)]
    rows = torch.stack([torch.stack([volume[:, x + dx, y + dy, z + dz] for dx in (-1, 0, 1) for dy in (-1, 0, 1)
                                     for dz in (-1, 0, 1)]).flatten() for x, y, z in centres])
    conv = torch.relu(torch.nn.functional.conv3d(volume[None], cnn.layers[0].weight, cnn.layers[0].bias))[0]
    expected = torch.stack([conv[:, x - 1:x + 1, y - 1:y + 1, z - 1:z + 1].flatten() for x, y, z in centres])
    assert cnn.out_size == 4 * 2**3
    torch.testing.assert_close(cnn(rows), expected)
    with pytest.raises(DwimlError, match="width"):
        CNNEmbedding(5 * 27, width=3, channels=[4, 4], kernel_size=3)


def test_autoencoder_reconstructs_fixed_length_streamlines():
    model = build_model(AUTOENCODER)
    points = torch.randn(4 * 13, 3)
    assert model.encode(points, torch.full((4,), 13)).shape == (4, 5)
    assert model(points, torch.full((4,), 13)).shape == points.shape
    loss, n = model.compute_loss(points + 1.0, points)
    assert n == 52 and float(loss) == pytest.approx(3.0)
    with pytest.raises(DwimlError, match="loader.nb_points"):
        model(points, torch.tensor([13, 13, 13, 12, 1]))
    with pytest.raises(DwimlError, match="step=streamlines"):
        build_model({**AUTOENCODER, "input_size": 28})


@pytest.mark.parametrize("name", [*TRACKING_MODELS, "autoencoder", "cnn"])
def test_save_and_load_give_identical_outputs(tmp_path, name):
    torch.manual_seed(1)
    cnn = {"_target_": "dwiml.models.embeddings.CNNEmbedding", "_partial_": True, "width": 3, "channels": [3]}
    config = {"autoencoder": AUTOENCODER,
              "cnn": {**TRANSFORMER, "variant": "encoder_decoder", "input_size": 54, "input_embedding": cnn},
              **TRACKING_MODELS}[name]
    model = build_model(config)
    save_model(model, config, tmp_path / "best_model")
    assert json.loads((tmp_path / "best_model" / "model_config.json").read_text()) == config
    loaded = load_model(tmp_path / "best_model").model
    model.eval(), loaded.eval()
    lengths = torch.tensor([13, 13])
    args = (torch.randn(26, 3), lengths) if name == "autoencoder" else \
        (torch.randn(26, config["input_size"]), lengths, torch.randn(26, 3))
    assert torch.equal(loaded(*args), model(*args))


def test_model_config_targets_must_be_modules(tmp_path):
    with pytest.raises(DwimlError, match="not a torch.nn.Module"):
        build_model({**CONFIG, "_target_": "os.system"})
    with pytest.raises(DwimlError, match="rnn_type"):
        build_model({**CONFIG, "rnn_type": "transformer"})
    with pytest.raises(DwimlError, match="variant"):
        build_model({**TRANSFORMER, "variant": "decoder"})
    with pytest.raises(DwimlError, match="not a model folder"):
        load_model(tmp_path)


class RecordingModel(torch.nn.Module):
    """Keeps what the step gives it; its loss is the mean target direction length."""

    def forward(self, inputs, lengths, directions):
        self.seen = {"inputs": inputs, "lengths": lengths, "directions": directions}
        return inputs

    def compute_loss(self, outputs, target_dirs, eos_targets=None):
        self.seen.update(target_dirs=target_dirs, eos_targets=eos_targets)
        return target_dirs.norm(dim=1).mean(), len(target_dirs)


@pytest.mark.parametrize("add_eos_target", [False, True])
def test_one_input_step_rows_targets_and_end_of_streamline(hdf5_path, add_eos_target):
    step = OneInputStep(MultiSubjectDataset(hdf5_path), "input", add_eos_target=add_eos_target)
    lengths = torch.tensor([3, 5])
    points = torch.rand(8, 3) * 5 + 1
    target_points = points + 0.1 * torch.randn(8, 3)
    model = RecordingModel()
    _, n = step(model, Batch(points, target_points, lengths, torch.tensor([0, 1]), "training"))
    seen = model.seen
    keep = torch.tensor([0, 1, 3, 4, 5, 6]) if not add_eos_target else torch.arange(8)
    assert n == len(keep) and seen["lengths"].tolist() == ([3, 5] if add_eos_target else [2, 4])
    diffs = torch.cat([target_points[1:] - target_points[:-1], torch.zeros(1, 3)])
    diffs[2] = 0.0
    torch.testing.assert_close(seen["target_dirs"], diffs[keep])
    input_diffs = torch.cat([points[1:] - points[:-1], torch.zeros(1, 3)])
    input_diffs[2] = 0.0
    torch.testing.assert_close(seen["directions"], input_diffs[keep])
    assert seen["inputs"].shape == (len(keep), 5)
    if add_eos_target:
        assert seen["eos_targets"].tolist() == [False, False, True, False, False, False, False, True]
    else:
        assert seen["eos_targets"] is None


def test_a_cut_end_gets_no_end_of_streamline_target(hdf5_path):
    step = OneInputStep(MultiSubjectDataset(hdf5_path), "input", add_eos_target=True)
    lengths = torch.tensor([3, 5])
    points = torch.rand(8, 3) * 5 + 1
    model = RecordingModel()
    cut_ends = torch.tensor([True, False])  # the first streamline's last point is a split's cut
    _, n = step(model, Batch(points, points, lengths, torch.tensor([0, 1]), "training", cut_ends))
    assert n == 7 and model.seen["lengths"].tolist() == [2, 5]
    assert model.seen["eos_targets"].tolist() == [False, False, False, False, False, False, True]
    torch.testing.assert_close(model.seen["target_dirs"][:2], points[1:3] - points[:2])


TINY = {"lstm": ["model.hidden_sizes=[8]"], "gru": ["model.hidden_sizes=[8]"],
        **{m: ["model.d_model=8", "model.nheads=2", "model.ff_size=8", "model.nb_layers=1"]
           for m in ("transformer", "transformer_src", "transformer_srctgt")}}
HEAD_PRESETS = ["cosine", "l2", "cosine_l2", "sphere_classification", "smooth_sphere_classification", "gaussian",
                "gaussian_mixture", "fisher_von_mises", "fisher_von_mises_mixture"]


@pytest.mark.slow
@pytest.mark.parametrize("head", HEAD_PRESETS)
@pytest.mark.parametrize("model", TINY)
def test_every_model_and_head_trains_and_reloads(cache_dir, tmp_path, model, head):
    eos = ["model.head.eos_weight=0.5", "step.add_eos_target=true"] if head.startswith("fisher") else []
    run_training(cache_dir, tmp_path, [f"model={model}", f"model/head={head}", *TINY[model], *eos,
                                       "trainer.max_epochs=1", "trainer.max_batches_per_epoch_training=1",
                                       "trainer.max_batches_per_epoch_validation=1"])
    (row,) = metrics(tmp_path)
    assert math.isfinite(float(row["train_loss"])) and math.isfinite(float(row["valid_loss"]))
    reloaded = load_model(tmp_path / "best_model").model
    assert type(reloaded).__name__ in ("Learn2Track", "Transformer")
    assert reloaded.head.has_eos == bool(eos)


def test_input_embedding_group_and_bring_your_own_model(cache_dir, tmp_path, monkeypatch):
    run_training(cache_dir, tmp_path / "linear", ["model=gru", "model/input_embedding=linear",
                                                  "model.input_embedding.out_size=8", *ONE_SMALL_EPOCH])
    assert load_model(tmp_path / "linear" / "best_model").model.rnns[0].input_size == 8 + 3
    run_training(cache_dir, tmp_path / "byo", ["model=custom", "model._target_=tests.byo_model.MyModel",
                                               "+model.hidden_size=16", "trainer.max_epochs=2",
                                               "trainer.max_batches_per_epoch_training=3"])
    rows = metrics(tmp_path / "byo")
    assert float(rows[1]["valid_loss"]) < float(rows[0]["valid_loss"])
    with pytest.raises(DwimlError, match="_target_ 'tests.byo_model.MyModel' is not a dwiml component"):
        load_model(tmp_path / "byo" / "best_model")  # a model folder names only dwiml's classes, unless trusted
    monkeypatch.setenv("DWIML_TRUSTED_MODULES", "other, tests.byo_model")
    model = load_model(tmp_path / "byo" / "best_model").model
    assert type(model).__name__ == "MyModel" and model.layers[0].in_features == 28 + 3


@pytest.fixture(scope="module")
def fixed_length_hdf5(subjects_dir, tmp_path_factory):
    """The test subjects with every streamline resampled to 16 points by dipy."""
    root = tmp_path_factory.mktemp("fixed_length")
    shutil.copytree(subjects_dir, root, dirs_exist_ok=True)
    for trk in root.glob("*/bundles/*.trk"):
        sft = load_tractogram(str(trk), "same")
        save_tractogram(StatefulTractogram.from_sft(set_number_of_points(sft.streamlines, 16), sft), str(trk))
    return create_hdf5(root, load_groups_config(root / "groups.yaml"), root / "data.hdf5",
                       SUBJECTS["training"], SUBJECTS["validation"], SUBJECTS["testing"])


def test_autoencoder_trains_with_the_streamlines_step(cache_dir, fixed_length_hdf5, tmp_path):
    run_training(cache_dir, tmp_path, ["dataset=hdf5", f"dataset.hdf5_path={fixed_length_hdf5}", "step=streamlines",
                                       "model=autoencoder", "model.nb_points=16", "loader.step_size_mm=null",
                                       "sampler.batch_size=20", "trainer.max_epochs=3", "optim.lr=0.003"])
    losses = [float(r["valid_loss"]) for r in metrics(tmp_path)]
    assert len(losses) == 3 and losses[-1] < losses[0] and np.isfinite(losses).all()
    assert load_model(tmp_path / "best_model").model.encoder[-1].out_features == 32
    # no input volume, no input specification: it cannot track
    assert load_model(tmp_path / "best_model").spec is None
    with pytest.raises(DwimlError, match="best_model has no input_spec.json: the model takes no input volume"):
        load_tracking_model(tmp_path, "cpu")
