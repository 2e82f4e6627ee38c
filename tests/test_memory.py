"""The memory bound of tracking: a volume interpolated in host memory by blocks of points tracks
exactly as the whole volume on the device; where the volume goes; the batch size from free memory,
against the Transformer's key/value cache counted here by hand."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from helpers import compose_run
from dwiml.models.io import build_model
from dwiml.tracking.memory import BLOCK_POINTS, MAX_BATCH, auto_batch_size, bytes_per_streamline, plan
from dwiml.tracking.tracker import Tracker, TrackingOptions, volume_inputs

SHAPE = (14, 12, 10)


def random_model(tmp_path, preset: str, nb_features: int):
    cfg = compose_run(tmp_path, tmp_path, [f"model={preset}"])
    torch.manual_seed(0)
    return build_model({**OmegaConf.to_container(cfg.model, resolve=True), "input_size": nb_features}).eval()


@pytest.mark.parametrize("preset", ["lstm", "transformer"])
def test_tracking_with_the_volume_interpolated_by_blocks_equals_the_whole_volume(tmp_path, preset):
    volume = torch.rand((*SHAPE, 4), generator=torch.Generator().manual_seed(1))
    offsets = torch.tensor([[0.0, 0, 0], [0.5, 0, 0], [0, -0.5, 0]])
    model = random_model(tmp_path, preset, 4 * len(offsets))
    seeds = torch.rand(40, 3, generator=torch.Generator().manual_seed(2)) * (torch.tensor(SHAPE) - 1)
    options = TrackingOptions(max_angle_deg=90, min_length_mm=0, max_length_mm=12, batch_size=16)
    whole, blocks = (Tracker(model, volume_inputs(volume, offsets, block_points), torch.ones(SHAPE), torch.ones(3),
                             options).track(seeds) for block_points in (None, 7))
    assert torch.equal(whole.lengths, blocks.lengths) and torch.equal(whole.points, blocks.points)
    assert whole.lengths.float().mean() > 3


def test_the_volume_goes_to_the_device_when_it_takes_at_most_half_its_free_memory():
    cuda = torch.device("cuda")
    assert plan(1000, cuda, free=2000) == plan(1000, cuda, free=2000)
    fits, too_large = plan(1000, cuda, free=2000), plan(1000, cuda, free=1999)
    assert fits.volume_device == cuda and fits.block_points is None and fits.free_bytes == 1000
    assert too_large.volume_device.type == "cpu" and too_large.block_points == BLOCK_POINTS
    assert too_large.free_bytes == 1999
    on_cpu = plan(10**12, torch.device("cpu"), free=10)
    assert on_cpu.volume_device.type == "cpu" and on_cpu.block_points is None


def transformer_cache_bytes(model, nb_steps: int) -> int:
    """Per streamline: every attention's keys and values at the capacity reached after ``nb_steps``
    (32 points, doubled past the point written when full), plus the int64 position."""
    capacity = 32
    for end in range(1, nb_steps + 1):
        if end > capacity:
            capacity = 2 * end
    nb_attentions = len(model.encoder.blocks) + 2 * len(model.decoder.blocks)
    return nb_attentions * 2 * capacity * model.d_model * 4 + 8


@pytest.mark.parametrize("nb_steps", [20, 201])
def test_bytes_per_streamline_count_the_models_state_at_the_maximum_length(tmp_path, nb_steps):
    volume = torch.rand((*SHAPE, 4))
    model = random_model(tmp_path, "transformer", 4)
    points = torch.tensor([[5.0, 5, 5], [6, 6, 6]])
    estimate = bytes_per_streamline(model, volume_inputs(volume), points, nb_steps)
    assert estimate == 2 * transformer_cache_bytes(model, nb_steps) + 4 * nb_steps * 12 + 4 * 4 * 4
    lstm = random_model(tmp_path, "lstm", 4)
    short, long = (bytes_per_streamline(lstm, volume_inputs(volume), points, n) for n in (nb_steps, nb_steps + 10))
    assert long - short == 4 * 10 * 12  # an LSTM's state does not grow with the streamline


def test_auto_batch_size():
    assert auto_batch_size(1000, 10_000_000) == 5000
    assert auto_batch_size(10**9, 10) == 1
    assert auto_batch_size(1, 10**12) == MAX_BATCH
    # The README's example: the Transformer preset at 200 mm in 1 mm steps, 7.5 GB free on an 8 GB GPU,
    # less a 1.25 mm whole-brain fODF (145 x 174 x 145 x 45 float32, 0.66 GB) on the device.
    fodf = 145 * 174 * 145 * 45 * 4
    assert plan(fodf, torch.device("cuda"), free=int(7.5e9)).volume_device.type == "cuda"
