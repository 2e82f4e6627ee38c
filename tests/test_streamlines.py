"""Packed streamline ops against dipy's per-streamline tools."""
import numpy as np
import torch
from dipy.tracking.streamline import set_number_of_points
from dipy.tracking.streamlinespeed import length

from dwiml.data import streamlines as sl
from helpers import random_streamlines


def packed(lines):
    return torch.from_numpy(np.concatenate(lines)), torch.tensor([len(s) for s in lines])


def unpack(points, lengths):
    return [p.numpy() for p in torch.split(points, lengths.tolist())]


def test_resample_step_matches_dipy_set_number_of_points():
    lines = random_streamlines(np.random.default_rng(1), 50)
    voxel_sizes = torch.tensor([1.5, 2.0, 2.5])
    points, lengths = packed(lines)
    new_points, new_lengths = sl.resample_step(points, lengths, voxel_sizes, step_size_mm=0.7)
    for line, ours in zip(lines, unpack(new_points, new_lengths)):
        in_mm = line * voxel_sizes.numpy()
        nb = max(2, int(round(length(in_mm) / 0.7)) + 1)
        expected = set_number_of_points(in_mm, nb) / voxel_sizes.numpy()
        np.testing.assert_allclose(ours, expected, atol=1e-4)
    steps = sl.segment_lengths_mm(new_points, new_lengths, voxel_sizes)
    inner = steps[steps > 0]
    assert abs(float(inner.mean()) - 0.7) < 0.05


def test_lengths_mm_matches_dipy():
    lines = random_streamlines(np.random.default_rng(2), 20)
    points, lengths = packed(lines)
    ours = sl.lengths_mm(points, lengths, torch.tensor([2.0, 1.0, 3.0])).numpy()
    np.testing.assert_allclose(ours, [length(s * [2.0, 1.0, 3.0]) for s in lines], rtol=1e-5)


def test_reverse_split_and_directions():
    lines = random_streamlines(np.random.default_rng(4), 6)
    points, lengths = packed(lines)
    flip = torch.tensor([True, False, True, False, False, True])
    reversed_lines = unpack(sl.reverse(points, lengths, flip), lengths)
    for line, out, f in zip(lines, reversed_lines, flip):
        np.testing.assert_array_equal(out, line[::-1] if f else line)

    cut = torch.zeros(6, dtype=torch.long)
    cut[1] = 3
    new_lengths, source = sl.split(lengths, cut)
    assert new_lengths.tolist() == [len(lines[0]), 3, len(lines[1]) - 3, *[len(s) for s in lines[2:]]]
    assert source.tolist() == [0, 1, 1, 2, 3, 4, 5]

    dirs, starts = sl.directions(points, lengths)
    expected = np.concatenate([np.diff(s, axis=0) for s in lines])
    np.testing.assert_allclose(dirs.numpy(), expected, atol=1e-6)
    assert len(starts) == int(lengths.sum()) - len(lines)
