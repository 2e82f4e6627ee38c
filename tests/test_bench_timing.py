"""The bench scripts' load check: every bench prints the machine's load and refuses to report above its limit."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import timing  # noqa: E402  (bench/timing.py, as the bench scripts import it)

BENCHES = sorted(p for p in (ROOT / "bench").glob("*.py") if p.name != "timing.py")


def test_check_load_prints_the_load_and_passes_under_the_limit(capsys):
    timing.check_load(1, 1e9, "start")
    out = capsys.readouterr().out
    assert f"{os.cpu_count()} cores" in out and "load average" in out and "this bench 1 threads" in out


def test_check_load_refuses_above_the_limit():
    with pytest.raises(SystemExit) as raised:
        timing.check_load(1, -1.0, "start")
    assert str(raised.value).startswith("refusing to report: the 1-minute load")
    with pytest.raises(SystemExit) as raised:
        timing.check_load(1, -1.0, "end")
    assert str(raised.value).startswith("the results above do not count")


def test_the_default_limit_is_the_bench_threads_plus_the_slack(monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (2.5, 0.0, 0.0))  # the machine's state, not torch/h5py
    timing.check_load(2, None, "start")  # 2.5 <= 2 + 1
    with pytest.raises(SystemExit):
        timing.check_load(1, None, "start")  # 2.5 > 1 + 1


@pytest.mark.slow
@pytest.mark.parametrize("script", BENCHES, ids=lambda p: p.name)
def test_every_bench_refuses_to_report_on_a_loaded_machine(script, tmp_path):
    result = subprocess.run([sys.executable, str(script), "--max-load", "-1", "--run", str(tmp_path)],
                            capture_output=True, text=True, cwd=tmp_path)
    if "unrecognized arguments: --run" in result.stderr:  # benches without a run folder
        result = subprocess.run([sys.executable, str(script), "--max-load", "-1"], capture_output=True, text=True,
                                cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "machine at start:" in result.stdout and "refusing to report" in result.stderr
