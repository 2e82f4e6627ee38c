"""dwiml-evaluate: model selection sees no testing subject; the testing subjects are scored once against
dipy's deterministic and probabilistic tracking; the output folder follows the command rules."""
from __future__ import annotations

import json

import h5py
import pytest

from dwiml.cli import evaluate as evaluate_cli
from dwiml.cli.evaluate import main as evaluate_main
from dwiml.config.build import build
from dwiml.data.builtin import phantom_selection_hdf5
from dwiml.data.hdf5 import read_subject_list, subject_lists
from dwiml.data.phantom import BUNDLE_DESIGNS
from dwiml.errors import DwimlError
from dwiml.evaluation.draws import METHODS, SCORE_SUBSETS, SUMMARY, Evaluation, Protocol, evaluate, prepare_draw
from dwiml.run_folder import RunFolder

TINY = ["dataset.nb_subjects=3", "trainer.max_epochs=1", "trainer.max_batches_per_epoch_training=3",
        "trainer.max_batches_per_epoch_validation=1"]


def test_the_selection_hdf5_holds_no_testing_subject(cache_dir):
    (folder,) = cache_dir.glob("phantom-v3-n3-s1234")
    subjects = {s: read_subject_list(folder / "subjects" / f"{s}_subjects.txt")
                for s in ("training", "validation", "testing")}
    assert subjects["testing"]
    with h5py.File(phantom_selection_hdf5(cache_dir, 3, 1234), "r") as h5:
        lists = subject_lists(h5)
        assert lists == {"training": subjects["training"], "validation": subjects["validation"], "testing": []}
        assert set(h5) == set(subjects["training"] + subjects["validation"])


def test_the_selection_step_is_given_a_dataset_without_the_testing_subjects(cache_dir):
    draw = prepare_draw(Evaluation("phantom_tracking", [1234], TINY, cache_dir=str(cache_dir)), 1234)
    dataset = build(draw.selection_config.dataset)
    assert draw.scored and len(dataset.testing) == 0
    assert not set(draw.scored) & set(dataset.training.subjects + dataset.validation.subjects)
    with h5py.File(dataset.hdf5_path, "r") as h5:
        assert not set(draw.scored) & set(h5)
    assert draw.hdf5 != dataset.hdf5_path  # the testing subjects are read from the draw's full HDF5 only


def test_tuning_scores_the_validation_subjects_from_the_selection_hdf5(cache_dir):
    draw = prepare_draw(Evaluation("phantom_tracking", [1234], TINY, cache_dir=str(cache_dir),
                                   score_subset="validation"), 1234)
    (folder,) = cache_dir.glob("phantom-v3-n3-s1234")
    testing = read_subject_list(folder / "subjects" / "testing_subjects.txt")
    assert draw.scored == read_subject_list(folder / "subjects" / "validation_subjects.txt")
    assert draw.hdf5 == folder / "selection.hdf5"  # where the scored subjects are read: no testing subject
    with h5py.File(draw.hdf5, "r") as h5:
        assert set(draw.scored) <= set(h5) and not set(testing) & set(h5)
    with pytest.raises(DwimlError, match="score_subset must be one of testing, validation, got 'training'"):
        prepare_draw(Evaluation("phantom_tracking", [1234], TINY, cache_dir=str(cache_dir),
                                score_subset="training"), 1234)
    assert evaluate_cli.SCORE_SUBSETS == SCORE_SUBSETS


def test_bad_input_is_refused_in_one_line(cache_dir, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.json").write_text("{}")  # an empty folder would be filled
    with pytest.raises(SystemExit) as e:
        evaluate_main(["--experiment", "phantom_tracking", "--out-dir", str(tmp_path / "out")])
    assert "exists (-f to replace it)" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SystemExit) as e:
        evaluate_main(["--experiment", "nope", "--out-dir", str(tmp_path / "new"), "--cache-dir", str(cache_dir)])
    assert "experiment=nope" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SystemExit) as e:
        evaluate_main(["--experiment", "phantom_tracking", "--out-dir", str(tmp_path / "new"),
                       "--cache-dir", str(cache_dir), "dataset=hdf5", "dataset.hdf5_path=x.hdf5"])
    assert "nb_subjects" in str(e.value) and "\n" not in str(e.value)  # the preset pins the phantom's keys
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.slow
def test_one_draw_end_to_end(cache_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    evaluate_main(["--experiment", "phantom_tracking", "--phantom-seeds", "1234", "--out-dir", str(out),
                   "--cache-dir", str(cache_dir), "--seeding", "endpoints", "--seeds-per-voxel", "1", *TINY])
    printed = capsys.readouterr().out
    assert "mean +- sd over 1 draws" in printed and "| kiss_a | kissing |" in printed
    results = json.loads((out / "results.json").read_text())
    (folder,) = cache_dir.glob("phantom-v3-n3-s1234")
    (testing,) = read_subject_list(folder / "subjects" / "testing_subjects.txt")
    scores = results["draws"]["1234"][testing]
    assert set(scores) == set(METHODS)
    for method in METHODS:
        assert set(SUMMARY) <= set(scores[method]) and len(scores[method]["bundles"]) == len(BUNDLE_DESIGNS)
        assert (out / "draw-1234" / testing / f"{method.replace(' ', '_')}.trk").is_file()
    assert scores["dipy det"]["valid_pct"] > 20  # dipy tracks the phantom; the tiny model need not
    with h5py.File(RunFolder(out / "draw-1234" / "run").hdf5_path(), "r") as h5:  # what selection trained on
        assert testing not in h5 and subject_lists(h5)["testing"] == []
    assert (out / "summary.md").read_text() in printed


@pytest.mark.slow
def test_two_draws_in_two_processes_scored_on_their_validation_subjects(cache_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    protocol = ["--seeding", "endpoints", "--seeds-per-voxel", "1"]
    evaluate_main(["--experiment", "phantom_tracking", "--phantom-seeds", "1234", "7", "--out-dir", str(out),
                   "--cache-dir", str(cache_dir), *protocol, "--score-subset", "validation", "--jobs", "2", *TINY])
    assert "mean +- sd over 2 draws (validation subjects)" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["evaluation"]["score_subset"] == "validation"
    for seed in (1234, 7):
        (folder,) = cache_dir.glob(f"phantom-v3-n3-s{seed}")
        (validation,) = read_subject_list(folder / "subjects" / "validation_subjects.txt")
        assert list(results["draws"][str(seed)]) == [validation]
        assert results["draws"][str(seed)][validation]["dipy det"]["valid_pct"] > 20
        assert sorted(p.name for p in (out / f"draw-{seed}").iterdir()) == ["run", validation]
    # the same model scored in this process gives the same scores as in its worker process
    evaluation = Evaluation("phantom_tracking", [7], TINY, Protocol(seeding="endpoints", seeds_per_voxel=1),
                            str(cache_dir), score_subset="validation")
    again = evaluate(evaluation, tmp_path / "again", {7: out / "draw-7" / "run" / "best_model"})
    assert again["draws"]["7"] == results["draws"]["7"]
