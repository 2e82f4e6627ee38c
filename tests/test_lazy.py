"""Lazy mode: byte-bounded LRU cache, chunk-level region reads, few streamline reads, exact interpolation."""
import pickle
import shutil

import h5py
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module

from dwiml.config.build import build
from dwiml.data.dataset import WHOLE_VOLUME_SHARE, MultiSubjectDataset
from dwiml.data.lazy import LRUCache
from dwiml.data.loader import BatchLoader
from dwiml.data.sampler import BatchSampler
from dwiml.data.streamlines import point_streamline_ids
from dwiml.data.volumes import VolumeRegions
from dwiml.training.steps import OneInputStep

VOLUME_CHUNKS = (4, 3, 3, 2)  # spatial chunks smaller than the volume; features split too
POINT_CHUNKS = (64, 3)


@pytest.fixture(scope="module")
def rechunked(hdf5_path, tmp_path_factory):
    """A copy of the fixture HDF5 whose first subject's input and points use small chunks."""
    out = tmp_path_factory.mktemp("rechunked") / "data.hdf5"
    shutil.copy(hdf5_path, out)
    with h5py.File(out, "a") as h5:
        for name, chunks in (("s1/input/data", VOLUME_CHUNKS), ("s1/streamlines/points", POINT_CHUNKS)):
            data = h5[name][:]
            del h5[name]
            h5.create_dataset(name, data=data, chunks=chunks)
    return out


def test_lru_cache_keeps_within_its_byte_budget_and_evicts_least_recently_used():
    cache, loads = LRUCache(max_bytes=300), []

    def get(key, nbytes=100):
        return cache.get(key, lambda: loads.append(key) or np.zeros(nbytes // 4, np.float32))

    for key in "abc":
        get(key)
    get("a")  # a hit: "b" is now the least recently used
    get("d")
    assert loads == ["a", "b", "c", "d"] and "b" not in cache and {"a", "c", "d"} <= set(cache._items)
    assert cache.nbytes == 300 == sum(a.nbytes for a in cache._items.values())
    get("e", nbytes=200)  # evicts "c" then "a"
    assert list(cache._items) == ["d", "e"] and cache.nbytes == 300
    assert get("huge", nbytes=400).nbytes == 400 and "huge" not in cache and cache.nbytes == 300


def test_region_reads_equal_slices_of_the_volume(rechunked):
    in_memory = MultiSubjectDataset(rechunked).training
    lazy = MultiSubjectDataset(rechunked, lazy=True, cache_bytes=10_000).training
    rng = np.random.default_rng(3)
    for subject in range(len(lazy)):
        full = in_memory.volume(subject, "input")
        shape = np.array(full.shape[:3])
        for _ in range(10):
            lo, hi = np.sort(rng.integers(-3, shape + 4, size=(2, 3)), axis=0)
            region, origin = lazy.volume_region(subject, "input", lo, hi)
            a, b = np.clip(lo, 0, shape), np.clip(hi, 0, shape)
            np.testing.assert_array_equal(origin, a)
            np.testing.assert_array_equal(region, full[a[0]:b[0], a[1]:b[1], a[2]:b[2]])
            assert lazy.reader.cache.nbytes <= 10_000
        np.testing.assert_array_equal(lazy.volume(subject, "input"), full)


def _overlapping_chunks(dset: h5py.Dataset, lo, hi) -> list[tuple[np.ndarray, np.ndarray]]:
    """Extent (clipped to the volume) of every stored chunk overlapping voxels [lo, hi), from HDF5's chunk index."""
    shape, chunk = np.array(dset.shape), np.array(dset.chunks)
    extents = []
    for i in range(dset.id.get_num_chunks()):
        start = np.array(dset.id.get_chunk_info(i).chunk_offset)
        stop = np.minimum(start + chunk, shape)
        if (start[:3] < hi).all() and (stop[:3] > lo).all():
            extents.append((start, stop))
    return extents


def test_region_read_touches_only_the_overlapping_chunks(rechunked):
    dataset = MultiSubjectDataset(rechunked, lazy=True)
    reader, subset = dataset.reader, dataset.training
    lo, hi = np.array([2, 4, 1]), np.array([7, 6, 5])
    with h5py.File(rechunked) as h5:
        chunks = _overlapping_chunks(h5["s1/input/data"], lo, hi)
    subset.volume_region(0, "input", lo, hi)
    assert reader.bytes_read == sum(4 * np.prod(stop - start) for start, stop in chunks)
    blocks = len({tuple(start[:3]) for start, _ in chunks})  # one read per spatial block, all features
    assert reader.nb_reads == blocks == 4 and len(chunks) == 3 * blocks  # 5 features in 3 chunks
    subset.volume_region(0, "input", (3, 4, 2), (6, 6, 4))  # inside the cached blocks: no read
    assert reader.nb_reads == blocks
    subset.volume_region(0, "input", (0, 0, 0), (1, 1, 1))
    assert reader.nb_reads == blocks + 1 and reader.bytes_read < 4 * 12 * 10 * 8 * 5


def test_cache_bounds_memory_across_subsets_and_volumes(rechunked):
    block_bytes = 4 * np.prod(VOLUME_CHUNKS[:3]) * 5
    dataset = MultiSubjectDataset(rechunked, lazy=True, cache_bytes=3 * block_bytes)
    in_memory = MultiSubjectDataset(rechunked)
    for subset in ("training", "validation", "training"):
        np.testing.assert_array_equal(dataset.subset(subset).volume(0, "input"),
                                      in_memory.subset(subset).volume(0, "input"))
        assert dataset.reader.cache.nbytes <= 3 * block_bytes
    assert dataset.training.reader is dataset.validation.reader is dataset.testing.reader


def _touched_chunks(subset, ids, chunk_rows):
    index = subset.index[0, "streamlines"]
    rows = np.concatenate([np.arange(index.offsets[i], index.offsets[i] + index.lengths[i]) for i in ids])
    return np.unique(rows // chunk_rows)


@pytest.mark.parametrize("contiguous", [False, True])
def test_streamlines_read_in_one_read_per_subject_touching_only_their_chunks(rechunked, contiguous, tmp_path):
    if contiguous:  # as dwiml-create-hdf5 stores points without compression
        rechunked = shutil.copy(rechunked, tmp_path / "contiguous.hdf5")
        with h5py.File(rechunked, "a") as h5:
            data = h5["s1/streamlines/points"][:]
            del h5["s1/streamlines/points"]
            h5.create_dataset("s1/streamlines/points", data=data)
    in_memory = MultiSubjectDataset(rechunked).training
    dataset = MultiSubjectDataset(rechunked, lazy=True)
    subset, reader = dataset.training, dataset.reader
    nb = len(subset.index[0, "streamlines"].lengths)
    total_rows = int(subset.index[0, "streamlines"].lengths.sum())
    rng = np.random.default_rng(0)
    everything = rng.permutation(nb)
    points, lengths = subset.streamlines(0, "streamlines", everything)
    expected, expected_lengths = in_memory.streamlines(0, "streamlines", everything)
    np.testing.assert_array_equal(points, expected)
    np.testing.assert_array_equal(lengths, expected_lengths)
    assert reader.nb_reads == 1 and reader.bytes_read == total_rows * 12
    for size in (3, 8, 15):
        ids = rng.choice(nb, size, replace=False)
        before_reads, before_bytes = reader.nb_reads, reader.bytes_read
        np.testing.assert_array_equal(subset.streamlines(0, "streamlines", ids)[0],
                                      in_memory.streamlines(0, "streamlines", ids)[0])
        assert reader.nb_reads - before_reads == 1
        if not contiguous:
            touched = _touched_chunks(subset, ids, POINT_CHUNKS[0])
            assert reader.bytes_read - before_bytes <= len(touched) * POINT_CHUNKS[0] * 12
        else:
            assert reader.bytes_read - before_bytes <= total_rows * 12
    repeated = np.array([5, 1, 5, 0, nb - 1])  # repeated and unsorted ids: order and repeats kept
    np.testing.assert_array_equal(subset.streamlines(0, "streamlines", repeated)[0],
                                  in_memory.streamlines(0, "streamlines", repeated)[0])
    np.testing.assert_array_equal(subset.streamlines(0, "streamlines", np.array([], dtype=int))[0],
                                  in_memory.streamlines(0, "streamlines", np.array([], dtype=int))[0])


def _batch_and_points(dataset):
    subset = dataset.training
    spec = next(iter(BatchSampler(subset, "streamlines", batch_size=12, nb_subjects_per_batch=3, seed=4)))
    batch = BatchLoader(subset, "streamlines", step_size_mm=0.7, noise_gaussian_size_forward=0.5)[spec]
    subjects = batch.subjects[point_streamline_ids(batch.lengths)]
    shape = torch.tensor(subset.shapes[0, "input"][:3], dtype=torch.float32)
    # Points near and beyond every face of the volume, where corners fall outside it.
    edges = torch.tensor([[-0.7, 2.0, 3.0], [1.0, -0.2, 0.5], [2.0, 3.0, -1.5], [-3.0, -3.0, -3.0]])
    edges = torch.cat([edges, shape - 1 + edges.abs(), torch.tensor([[100.0, 0.5, 0.5]])])
    points = torch.cat([batch.points, edges.repeat(3, 1)])
    subjects = torch.cat([subjects, torch.tensor(spec.subjects).repeat_interleave(len(edges))])
    return batch, points, subjects


@pytest.mark.parametrize("cache_bytes", [2**30, 3000])
def test_lazy_interpolation_equals_in_memory_interpolation(rechunked, cache_bytes):
    lazy = MultiSubjectDataset(rechunked, lazy=True, cache_bytes=cache_bytes)
    batch, points, subjects = _batch_and_points(lazy)
    interior = ((points > 1.5) & (points < 5.5)).all(1)  # their bounding box is smaller than the volume
    in_memory = OneInputStep(MultiSubjectDataset(rechunked), "input")
    step = OneInputStep(lazy, "input")
    assert isinstance(step.volumes, VolumeRegions)
    for selection in (interior, torch.ones_like(interior)):
        expected = in_memory.interpolate(batch, points[selection], subjects[selection])
        for _ in range(2):  # from the file, then from the cache
            assert torch.equal(step.interpolate(batch, points[selection], subjects[selection]), expected)
            assert lazy.reader.cache.nbytes <= cache_bytes
    inside = expected[:len(batch.points)].abs().sum(1)
    assert expected[-1].abs().sum() == 0 and inside.gt(0).all()  # the edge points test the zero corners
    assert interior.sum() > 10 and len(torch.unique(subjects[interior])) == 3
    step.volumes.margin = 2
    assert torch.equal(step.interpolate(batch, points, subjects), expected)


def test_volumes_that_fit_the_cache_are_read_once_whole_batch_after_batch(rechunked):
    lazy = MultiSubjectDataset(rechunked, lazy=True, cache_bytes=2**20)
    batch, points, subjects = _batch_and_points(lazy)
    step = OneInputStep(lazy, "input")
    expected = OneInputStep(MultiSubjectDataset(rechunked), "input").interpolate(batch, points, subjects)
    nb_subjects = len(torch.unique(subjects))
    reads, bytes_read = lazy.reader.nb_reads, lazy.reader.bytes_read  # the batch's streamlines
    for _ in range(3):
        assert torch.equal(step.interpolate(batch, points, subjects), expected)
        assert lazy.reader.nb_reads == reads + nb_subjects  # one whole read per subject, the first time only
    shape = lazy.training.shapes[0, "input"]
    assert lazy.reader.bytes_read - bytes_read == 4 * np.prod(shape) * nb_subjects
    small = MultiSubjectDataset(rechunked, lazy=True, cache_bytes=4 * np.prod(shape) * WHOLE_VOLUME_SHARE - 1)
    assert not small.training.fits_cache(0, "input") and lazy.training.fits_cache(0, "input")


def test_lazy_dataset_pickles_without_handle_or_cache(rechunked):
    dataset = MultiSubjectDataset(rechunked, lazy=True, cache_bytes=5000)
    dataset.training.volume(0, "input")
    dataset.training.streamlines(0, "streamlines", np.arange(4))
    assert len(dataset.reader.cache) > 0
    copy = pickle.loads(pickle.dumps(dataset))  # an open h5py file cannot be pickled
    assert len(copy.reader.cache) == 0 and copy.reader.cache.max_bytes == 5000 and copy.reader.nb_reads == 0
    assert copy.training.reader is copy.reader is copy.testing.reader
    np.testing.assert_array_equal(copy.training.volume(0, "input"), dataset.training.volume(0, "input"))


@pytest.mark.parametrize("preset", ["hdf5", "phantom"])
def test_cache_bytes_is_a_dataset_option(hdf5_path, preset):
    overrides = [f"dataset={preset}", "dataset.lazy=true", "dataset.cache_bytes=12345"]
    with initialize_config_module("dwiml.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides + [f"dataset.hdf5_path={hdf5_path}"] * (preset == "hdf5"))
        assert cfg.dataset.cache_bytes == 12345
        if preset == "hdf5":
            assert build(cfg.dataset).reader.cache.max_bytes == 12345
        with pytest.raises(Exception, match="cache_byte"):
            compose("train", overrides=[f"dataset={preset}", "dataset.cache_byte=1"])
