"""The trust boundary (dwiml/trust.py): a run of one's own model class resumes once that class is named, on the
command line or in DWIML_TRUSTED_MODULES. Hostile model and run folders are rows of the bad-input table
(tests/test_bad_inputs_outputs.py)."""
from __future__ import annotations

import pytest

from dwiml.errors import DwimlError
from helpers import metrics, run_training
from helpers.hostile import TINY, save_config


@pytest.mark.slow
def test_a_run_of_ones_own_model_resumes_when_its_class_is_named(cache_dir, tmp_path, monkeypatch):
    byo = ["model=custom", "model._target_=tests.byo_model.MyModel", "+model.hidden_size=8", *TINY[1:]]
    run_training(cache_dir, tmp_path, byo)
    save_config(tmp_path, cache_dir, byo)
    with pytest.raises(DwimlError, match="model._target_ 'tests.byo_model.MyModel' is not a dwiml component"):
        run_training(cache_dir, tmp_path, [f"resume={tmp_path}", "trainer.max_epochs=2"])
    run_training(cache_dir, tmp_path, [f"resume={tmp_path}", "trainer.max_epochs=2",
                                       "model._target_=tests.byo_model.MyModel"])  # named on the command line
    monkeypatch.setenv("DWIML_TRUSTED_MODULES", "tests.byo_model")
    run_training(cache_dir, tmp_path, [f"resume={tmp_path}", "trainer.max_epochs=3"])
    assert [r["epoch"] for r in metrics(tmp_path)] == ["1", "2", "3"]
