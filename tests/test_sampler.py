"""The batch sampler on a real HDF5: passes, capped epochs, resume, ranks, cycles, edge cases."""
import pytest

from dwiml.data.dataset import MultiSubjectDataset
from dwiml.data.sampler import BatchSampler


@pytest.fixture(scope="module")
def training(hdf5_path):
    return MultiSubjectDataset(hdf5_path).training


def all_streamlines(subset) -> list[tuple[int, int]]:
    """Every (subject, streamline id) of the subset, from the HDF5 index."""
    return [(s, i) for s in range(len(subset)) for i in range(len(subset.index[s, "streamlines"].lengths))]


def pairs(batches) -> list[tuple[int, int]]:
    return [(s, int(i)) for b in batches for s, ids in zip(b.subjects, b.ids) for i in ids]


def epochs(sampler, nb_epochs, max_batches=None):
    out = []
    for epoch in range(nb_epochs):
        sampler.set_epoch(epoch, max_batches)
        out.append(list(sampler))
    return out


def key(batch):
    return batch.pass_index, batch.position, batch.seed, tuple(map(tuple, batch.ids)), batch.subjects


def test_capped_epochs_continue_the_pass_and_cover_everything(training):
    sampler = BatchSampler(training, "streamlines", batch_size=9, nb_subjects_per_batch=2, seed=3)
    stream = [b for e in epochs(sampler, 7, max_batches=5) for b in e]
    assert len(stream) == 35
    first_pass = [b for b in stream if b.pass_index == 0]
    assert [b.position for b in first_pass] == list(range(len(first_pass)))
    assert stream[:len(first_pass)] == first_pass  # the second pass starts only when the first is done
    seen = pairs(first_pass)
    assert sorted(seen) == all_streamlines(training)  # each streamline exactly once
    second = pairs(stream[len(first_pass):])
    assert stream[len(first_pass)].pass_index == 1 and second != seen[:len(second)]  # reshuffled


def test_uncapped_epoch_is_one_pass_and_passes_differ(training):
    sampler = BatchSampler(training, "streamlines", batch_size=9, nb_subjects_per_batch=2, seed=3)
    first, second = epochs(sampler, 2)
    assert {b.pass_index for b in first} == {0} and {b.pass_index for b in second} == {1}
    assert sorted(pairs(first)) == sorted(pairs(second)) == all_streamlines(training)
    assert pairs(first) != pairs(second)
    assert len(set(b.seed for b in first + second)) == len(first) + len(second)


def test_resumed_sampler_yields_the_uninterrupted_sequence(training):
    options = dict(batch_size=40.0, unit="length_mm", nb_subjects_per_batch=2, cycles=2, seed=11)
    straight = [key(b) for e in epochs(BatchSampler(training, "streamlines", **options), 4, 3) for b in e]

    first = BatchSampler(training, "streamlines", **options)
    done = [key(b) for e in epochs(first, 2, 3) for b in e]
    first.set_epoch(2, 3, start_batch=0)
    done += [key(b) for b in list(first)[:2]]  # interrupted after two batches of epoch 2
    first.set_epoch(2, 3, start_batch=2)  # what the trainer records in its checkpoint
    state = first.state_dict()

    resumed = BatchSampler(training, "streamlines", **options)
    resumed.load_state_dict(state)
    assert len(resumed) == 1
    done += [key(b) for b in resumed]
    resumed.set_epoch(3, 3)
    done += [key(b) for b in resumed]
    assert done == straight


@pytest.mark.parametrize("max_batches", [None, 2])
def test_two_ranks_get_disjoint_batches_covering_the_epoch(training, max_batches):
    options = dict(batch_size=7, nb_subjects_per_batch=2, seed=5, world_size=2)
    ranks = [BatchSampler(training, "streamlines", rank=r, **options) for r in (0, 1)]
    single = BatchSampler(training, "streamlines", **{**options, "world_size": 1})
    stream = [key(b) for e in epochs(single, 4) for b in e]
    for epoch in range(3):
        per_rank = []
        for sampler in ranks:
            sampler.set_epoch(epoch, max_batches)
            per_rank.append([key(b) for b in sampler])
        assert len(per_rank[0]) == len(per_rank[1]) == len(ranks[0]) > 0  # equal steps per rank
        assert not set(per_rank[0]) & set(per_rank[1])
        # together they are a piece of the single-process stream, with nothing skipped
        together = sorted(per_rank[0] + per_rank[1])
        start = stream.index(together[0])
        assert together == sorted(stream[start:start + len(together)])
    ranks[0].set_epoch(0)
    ranks[1].set_epoch(0)
    assert sorted(pairs(list(ranks[0]) + list(ranks[1])))[:len(all_streamlines(training))] == all_streamlines(training)


def test_cycles_reuse_the_chosen_subjects(training):
    sampler = BatchSampler(training, "streamlines", batch_size=4, nb_subjects_per_batch=1, cycles=3, seed=2)
    batches = list(sampler)
    used = {s: 0 for s in range(len(training))}
    run_subject, run_length = None, 0
    for batch in batches + [None]:
        subject = batch.subjects[0] if batch else None
        if subject != run_subject and run_subject is not None:
            exhausted = used[run_subject] == len(training.index[run_subject, "streamlines"].lengths)
            assert run_length % 3 == 0 or exhausted  # subjects change only after 3 batches or when empty
            run_length = 0
        if batch:
            used[subject] += len(batch)
            run_subject, run_length = subject, run_length + 1
    assert sorted(pairs(batches)) == all_streamlines(training)
    no_cycles = BatchSampler(training, "streamlines", batch_size=4, nb_subjects_per_batch=1, seed=2)
    switches = [sum(a.subjects != b.subjects for a, b in zip(x, x[1:])) for x in (batches, list(no_cycles))]
    assert switches[0] < switches[1]


def test_validation_order_is_fixed_and_sharded(hdf5_path):
    validation = MultiSubjectDataset(hdf5_path).validation
    ranks = [BatchSampler(validation, "streamlines", 6, shuffle=False, rank=r, world_size=2) for r in (0, 1)]
    first = [[key(b) for b in s] for s in ranks]
    for sampler in ranks:
        sampler.set_epoch(5, max_batches=None)
    assert first == [[key(b) for b in s] for s in ranks]
    assert sorted(pairs([b for s in ranks for b in s])) == all_streamlines(validation)
    assert pairs(list(ranks[0]))[:6] == [(0, i) for i in range(6)]  # stored order
    ranks[0].set_epoch(7, max_batches=2)
    assert [k[1] for k in map(key, ranks[0])] == [0, 2]


def test_edge_cases_are_documented_behaviour(training):
    lengths = {s: training.index[s, "streamlines"].lengths_mm for s in range(len(training))}
    tiny_budget = BatchSampler(training, "streamlines", batch_size=0.5, unit="length_mm", nb_subjects_per_batch=3)
    batches = list(tiny_budget)
    assert all(len(ids) == 1 for b in batches for ids in b.ids)  # longer than the budget: alone per subject
    assert min(v.min() for v in lengths.values()) > 0.5
    assert sorted(pairs(batches)) == all_streamlines(training)
    few = BatchSampler(training, "streamlines", batch_size=2, nb_subjects_per_batch=3)
    assert all(len(b) <= 2 and len(b.subjects) <= 2 for b in few)
    assert sorted(pairs(list(few))) == all_streamlines(training)
    with pytest.raises(Exception, match="at least 1"):
        BatchSampler(training, "streamlines", batch_size=0.5)
    with pytest.raises(Exception, match="rank 2"):
        BatchSampler(training, "streamlines", batch_size=5, rank=2, world_size=2)
