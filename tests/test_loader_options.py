"""Every loader option on a real HDF5 (anisotropic voxels), against dipy, scipy and closed forms."""
import numpy as np
import pytest
import torch
from dipy.tracking.streamline import set_number_of_points
from dipy.tracking.streamlinespeed import compress_streamlines, length
from scipy import stats

from dwiml.data.dataset import MultiSubjectDataset
from dwiml.data.loader import BatchLoader
from dwiml.data.streamlines import compress
from dwiml.data.sampler import BatchSpec
from dwiml.errors import DwimlError


@pytest.fixture(scope="module")
def subset(hdf5_path):
    return MultiSubjectDataset(hdf5_path).training


def whole_subject(subset, subject=0, seed=7) -> BatchSpec:
    return BatchSpec((subject,), (np.arange(len(subset.index[subject, "streamlines"].lengths)),), seed)


def stored(subset, spec):
    """The stored streamlines of a one-subject spec, one array each, in voxels."""
    points, lengths = subset.streamlines(spec.subjects[0], "streamlines", spec.ids[0])
    return np.split(points.astype(np.float64), np.cumsum(lengths)[:-1])


def unpack(points, lengths):
    return [p.double().numpy() for p in torch.split(points, lengths.tolist())]


def load(subset, spec, **options):
    """The batch of ``spec`` with ``options``, else the stored points in their order."""
    return BatchLoader(subset, "streamlines", **{"step_size_mm": None, "reverse_ratio": 0.0, **options})[spec]


def test_nb_points_equals_dipy_set_number_of_points_in_mm(subset):
    spec = whole_subject(subset)
    voxel_sizes = subset.voxel_sizes(0, "streamlines")
    batch = load(subset, spec, step_size_mm=None, nb_points=12)
    assert batch.lengths.tolist() == [12] * len(spec)
    for line, ours in zip(stored(subset, spec), unpack(batch.points, batch.lengths)):
        expected = set_number_of_points(line * voxel_sizes, 12) / voxel_sizes
        np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_compress_equals_dipy_compress_streamlines_in_mm(subset):
    spec = whole_subject(subset)
    voxel_sizes = subset.voxel_sizes(0, "streamlines")
    fine = load(subset, spec, step_size_mm=0.3)  # many nearly collinear points to drop
    batch = compress(fine.points.double(), fine.lengths, torch.from_numpy(voxel_sizes), 0.05)
    assert int(batch[1].sum()) < int(fine.lengths.sum()) // 2
    for line, ours in zip(unpack(fine.points, fine.lengths), unpack(*batch)):
        expected = compress_streamlines(line * voxel_sizes, tol_error=0.05) / voxel_sizes
        np.testing.assert_allclose(ours, expected, atol=1e-5)
    loaded = load(subset, spec, step_size_mm=None, compress_mm=0.05)  # the whole loader path
    assert len(loaded.lengths) == len(spec) and (loaded.lengths >= 2).all()


def test_step_size_gives_equal_spacing_close_to_the_step(subset):
    spec, step = whole_subject(subset), 0.6
    voxel_sizes = subset.voxel_sizes(0, "streamlines")
    batch = load(subset, spec, step_size_mm=step)
    for line, ours in zip(stored(subset, spec), unpack(batch.points, batch.lengths)):
        total = length(line * voxel_sizes)
        assert len(ours) - 1 == max(1, round(total / step))
        spacing = total / (len(ours) - 1)  # the arc length between points; chords are at most that
        assert abs(spacing - step) <= step / 2 / (len(ours) - 1) + 1e-9
        chords = np.linalg.norm(np.diff(ours, axis=0) * voxel_sizes, axis=1)
        assert chords.max() <= spacing + 1e-4 and chords.mean() >= 0.9 * spacing
        np.testing.assert_allclose(ours[[0, -1]], line[[0, -1]], atol=1e-5)


def test_no_resampling_keeps_the_stored_points(subset):
    spec = whole_subject(subset)
    batch = load(subset, spec, step_size_mm=None)
    np.testing.assert_array_equal(np.concatenate(unpack(batch.points, batch.lengths)),
                                  np.concatenate(stored(subset, spec)))


def test_split_cuts_every_long_enough_streamline_in_two_long_enough_halves(subset):
    spec, m = whole_subject(subset), 4
    original = load(subset, spec)
    split = load(subset, spec, split_ratio=1.0, min_points_after_split=m)
    assert torch.equal(split.points, original.points)  # only the lengths change
    new = iter(split.lengths.tolist())
    for n in original.lengths.tolist():
        if n >= 2 * m:
            first, second = next(new), next(new)
            assert first + second == n and first >= m and second >= m
        else:
            assert next(new) == n
    assert next(new, None) is None
    assert (original.lengths >= 2 * m).any()  # the test data has streamlines to cut
    # the first half of each cut ends at the cut; reversed, the second half does
    firsts = torch.tensor([x for n in original.lengths.tolist() for x in ([True, False] if n >= 2 * m else [False])])
    assert original.cut_ends is None and torch.equal(split.cut_ends, firsts)
    reversed_ = load(subset, spec, split_ratio=1.0, min_points_after_split=m, reverse_ratio=1.0)
    assert torch.equal(reversed_.cut_ends, firsts.roll(1))


def test_reverse(subset):
    spec = whole_subject(subset)
    lines = unpack(*(lambda b: (b.points, b.lengths))(load(subset, spec)))
    for ratio, expected_flips in ((1.0, {True}), (0.0, {False}), (0.5, {True, False})):
        out = load(subset, spec, reverse_ratio=ratio)
        flips = set()
        for line, ours in zip(lines, unpack(out.points, out.lengths)):
            flipped = np.array_equal(ours, line[::-1])
            assert flipped or np.array_equal(ours, line)
            flips.add(flipped)
        assert flips == expected_flips


@pytest.mark.parametrize("key", ["noise_gaussian_size_forward", "noise_gaussian_size_loss"])
def test_noise_in_mm_is_a_gaussian_truncated_at_two_sigma_on_each_axis(subset, key):
    spec, sigma = whole_subject(subset), 0.4
    voxel_sizes = subset.voxel_sizes(0, "streamlines")
    assert len(set(voxel_sizes)) == 3  # anisotropic voxels
    plain = load(subset, spec, step_size_mm=0.2)
    noisy = load(subset, spec, step_size_mm=0.2, **{key: sigma})
    moved, kept = ("points", "target_points") if key.endswith("forward") else ("target_points", "points")
    assert torch.equal(getattr(noisy, kept), getattr(plain, kept))
    shift_mm = (getattr(noisy, moved) - getattr(plain, moved)).double().numpy() * voxel_sizes
    assert np.abs(shift_mm).max() <= 2 * sigma + 1e-5
    truncated = stats.truncnorm(-2, 2, scale=sigma)
    for axis in range(3):
        assert stats.kstest(shift_mm[:, axis], truncated.cdf).pvalue > 1e-3
    # truncated, not clipped: no pile of values at the bound (clipping puts 4.6% there)
    near_bound = np.mean(np.abs(shift_mm) > 1.99 * sigma)
    assert near_bound < 3 * 2 * truncated.sf(1.99 * sigma) + 1e-3
    validation = BatchLoader(subset, "streamlines", step_size_mm=0.2, augment=False, **{key: sigma})[spec]
    assert torch.equal(validation.points, plain.points) and torch.equal(validation.target_points, plain.points)


@pytest.mark.parametrize("options, message", [
    (dict(step_size_mm=1.0, nb_points=10), "step_size_mm=1.0 and nb_points=10 are set together"),
    (dict(step_size_mm=1.0, compress_mm=0.1), "step_size_mm=1.0 and compress_mm=0.1 are set together"),
    (dict(step_size_mm=None, compress_mm=0.0), "loader.compress_mm: 0.0 must be > 0"),
    (dict(step_size_mm=0.0), "loader.step_size_mm: 0.0 must be > 0"),
    (dict(step_size_mm=None, nb_points=1), "loader.nb_points: 1 must be >= 2"),
    (dict(reverse_ratio=1.5), "loader.reverse_ratio: 1.5 must be in"),
    (dict(split_ratio=-0.1), "loader.split_ratio: -0.1 must be in"),
    (dict(min_points_after_split=1), "loader.min_points_after_split: 1 must be >= 2"),
    (dict(noise_gaussian_size_forward=-1.0), "loader.noise_gaussian_size_forward: -1.0 must be >= 0"),
    (dict(noise_gaussian_size_loss=-1.0), "loader.noise_gaussian_size_loss: -1.0 must be >= 0"),
])
def test_bad_options_are_refused_naming_the_key(subset, options, message):
    with pytest.raises(DwimlError, match=message.replace("(", r"\(")):
        BatchLoader(subset, "streamlines", **options)
