"""Dataset, sampler and loader on a real HDF5 built from real NIfTI/TRK files."""
import pickle
from multiprocessing.reduction import ForkingPickler

import numpy as np
import pytest
import torch

from dwiml.data.dataset import MultiSubjectDataset
from dwiml.data.loader import BatchLoader
from dwiml.data.sampler import BatchSampler
from dwiml.errors import DwimlError

PLAIN = dict(step_size_mm=None, reverse_ratio=0.0)  # the stored points, in their order


def _all_batches(loader, sampler, num_workers=0):
    data = torch.utils.data.DataLoader(loader, sampler=sampler, batch_size=None, num_workers=num_workers,
                                       collate_fn=lambda b: b)
    return list(data)


def _same(batches_a, batches_b):
    assert len(batches_a) == len(batches_b) > 0
    for a, b in zip(batches_a, batches_b):
        assert torch.equal(a.points, b.points) and torch.equal(a.target_points, b.target_points)
        assert torch.equal(a.lengths, b.lengths) and torch.equal(a.subjects, b.subjects)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_lazy_and_in_memory_give_the_same_batches(hdf5_path, num_workers):
    options = dict(streamline_group="streamlines", step_size_mm=0.8, reverse_ratio=0.5, split_ratio=0.5,
                   noise_gaussian_size_forward=0.1, noise_gaussian_size_loss=0.05)
    batches = []
    for lazy in (False, True):
        subset = MultiSubjectDataset(hdf5_path, lazy=lazy).training
        sampler = BatchSampler(subset, "streamlines", batch_size=7, nb_subjects_per_batch=2, seed=5)
        batches.append(_all_batches(BatchLoader(subset, **options), sampler, num_workers))
    _same(*batches)
    in_memory = MultiSubjectDataset(hdf5_path, lazy=False).training
    lazy = MultiSubjectDataset(hdf5_path, lazy=True).training
    np.testing.assert_array_equal(in_memory.volume(1, "input"), lazy.volume(1, "input"))


def test_batches_go_by_value_from_workers(hdf5_path):
    """Pickled as DataLoader workers pickle it, a batch holds numpy arrays, no shared-memory tensor; it
    comes back equal (dtypes, and points that are also the target points, kept), and 2 workers give
    the batches of the main process."""
    subset = MultiSubjectDataset(hdf5_path).training
    sampler = BatchSampler(subset, "streamlines", batch_size=7, nb_subjects_per_batch=2, seed=5)
    loader = BatchLoader(subset, "streamlines", step_size_mm=0.8)  # no noise: the points are the targets
    batch = loader[next(iter(sampler))]
    sent = bytes(ForkingPickler.dumps(batch))
    assert b"rebuild_storage" not in sent and b"numpy" in sent
    copy = pickle.loads(sent)
    _same([batch], [copy])
    assert copy.target_points is copy.points and copy.subset == batch.subset
    assert [t.dtype for t in (copy.points, copy.lengths, copy.subjects)] == [torch.float32, torch.int64, torch.int64]
    _same(_all_batches(loader, sampler), _all_batches(loader, sampler, num_workers=2))


def test_streamlines_read_in_requested_order(hdf5_path):
    subset = MultiSubjectDataset(hdf5_path, lazy=True).training
    index = subset.index[0, "streamlines"]
    ids = np.array([7, 2, 30])
    points, lengths = subset.streamlines(0, "streamlines", ids)
    full = MultiSubjectDataset(hdf5_path).training._arrays[0, "streamlines"]
    expected = np.concatenate([full[index.offsets[i]:index.offsets[i] + index.lengths[i]] for i in ids])
    np.testing.assert_array_equal(points, expected)
    np.testing.assert_array_equal(lengths, index.lengths[ids])


def _epoch(sampler):
    return list(sampler)


def test_sampler_by_count_sees_every_streamline_once(hdf5_path):
    subset = MultiSubjectDataset(hdf5_path).training
    sampler = BatchSampler(subset, "streamlines", batch_size=9, nb_subjects_per_batch=2, seed=1)
    batches = _epoch(sampler)
    assert all(len(b) <= 9 and len(b.subjects) <= 2 for b in batches)
    assert sum(len(b) == 9 for b in batches) >= len(batches) - 3  # only the tail of the epoch is short
    seen = {s: np.concatenate([i for b in batches for sb, i in zip(b.subjects, b.ids) if sb == s]) for s in range(3)}
    for s in range(3):
        assert sorted(seen[s].tolist()) == list(range(len(subset.index[s, "streamlines"].lengths)))
    assert [b.seed for b in batches] == [b.seed for b in _epoch(sampler)]  # reproducible
    sampler.set_epoch(1)
    assert [b.ids[0].tolist() for b in batches] != [b.ids[0].tolist() for b in _epoch(sampler)]


def test_sampler_by_length(hdf5_path):
    subset = MultiSubjectDataset(hdf5_path).training
    budget = 60.0
    sampler = BatchSampler(subset, "streamlines", batch_size=budget, unit="length_mm", nb_subjects_per_batch=3)
    for batch in _epoch(sampler):
        for s, ids in zip(batch.subjects, batch.ids):
            lengths = subset.index[s, "streamlines"].lengths_mm[ids]
            share = budget / len(batch.subjects)
            assert lengths.sum() <= share or len(ids) == 1


def test_sampler_edge_cases(hdf5_path):
    subset = MultiSubjectDataset(hdf5_path).training
    tiny = _epoch(BatchSampler(subset, "streamlines", batch_size=2, nb_subjects_per_batch=3))
    assert all(len(b) <= 2 and len(b.subjects) <= 2 for b in tiny)
    huge = _epoch(BatchSampler(subset, "streamlines", batch_size=0.01, unit="length_mm", nb_subjects_per_batch=1))
    assert all(len(b) == 1 for b in huge)
    valid = BatchSampler(MultiSubjectDataset(hdf5_path).validation, "streamlines", 5, shuffle=False)
    first = [b.ids[0].tolist() for b in _epoch(valid)]
    valid.set_epoch(3)
    assert first == [b.ids[0].tolist() for b in _epoch(valid)] and first[0] == [0, 1, 2, 3, 4]
    with pytest.raises(DwimlError, match="unit"):
        BatchSampler(subset, "streamlines", 5, unit="points")
    with pytest.raises(DwimlError, match="'bundles'"):
        BatchSampler(subset, "bundles", 5)


def test_loader_augmentations(hdf5_path):
    subset = MultiSubjectDataset(hdf5_path).training
    spec = next(iter(BatchSampler(subset, "streamlines", batch_size=20, seed=2)))
    plain = BatchLoader(subset, "streamlines", **PLAIN)[spec]
    assert torch.equal(plain.points, plain.target_points) and len(plain.lengths) == 20
    split = BatchLoader(subset, "streamlines", **PLAIN, split_ratio=1.0, min_points_after_split=3)[spec]
    assert len(split.lengths) > 20 and split.lengths.min() >= 2
    assert torch.equal(split.points, plain.points)  # a split only cuts lengths
    reversed_ = BatchLoader(subset, "streamlines", step_size_mm=None, reverse_ratio=1.0)[spec]
    first = plain.points[: plain.lengths[0]]
    assert torch.equal(reversed_.points[: plain.lengths[0]], first.flip(0))
    noisy = BatchLoader(subset, "streamlines", **PLAIN, noise_gaussian_size_forward=0.5)[spec]
    shift_mm = (noisy.points - plain.points).double() * torch.from_numpy(subset.voxel_sizes(0, "streamlines"))
    assert 0 < shift_mm.abs().max() <= 1.0 + 1e-5 and torch.equal(noisy.target_points, plain.points)
    again = BatchLoader(subset, "streamlines", **PLAIN, noise_gaussian_size_forward=0.5)[spec]
    assert torch.equal(noisy.points, again.points)
