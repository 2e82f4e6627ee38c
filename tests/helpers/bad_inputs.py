"""The bad-input runner of the tests/test_bad_inputs_*.py tables.

A row is a command (an entry point of dwiml's pyproject.toml, ``dwiml-train`` included), the arguments a
function builds from files it writes in the row's own folder, and the culprit (a file name, subject, group,
key or option) that the error must name. The command runs in this process, in that folder, and must exit with
status 1 and one error line naming the culprit: no traceback, no new file (a run that never started may leave
its run folder, holding a ``train.log`` with that line and nothing trained), and every file that was there left
as it was (nothing replaced).
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import distribution
from pathlib import Path

import pytest

COMMANDS = {e.name: e for e in distribution("dwiml").entry_points if e.group == "console_scripts"}


@dataclass(frozen=True)
class BadInput:
    command: str                        # e.g. "dwiml-track", "dwiml-train"
    args: Callable[[Path], list[str]]   # writes what the row needs under the folder, returns the arguments
    culprit: str                        # what the error line must contain


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


def left_behind(before: dict, after: dict) -> list[str]:
    """Files new, changed or removed; the run folder of a start that failed may stay if nothing was trained."""
    changed = [name for name, stat in after.items() if before.get(name) != stat]
    logs = [name for name in changed if Path(name).name == "train.log"]
    runs = {str(Path(log).parent) for log in logs}
    if len(runs) == 1:
        (run,) = runs
        trained = [n for n in changed if n.startswith(run + "/") and Path(n).name in
                   ("metrics.csv", "batch_metrics.csv", "model.pt", "state.pt")]
        if not trained:
            changed = [n for n in changed if not (n == run or n.startswith(run + "/"))]
    return changed + [f"{name} (removed)" for name in before if name not in after]


def run_bad_input(row: BadInput, folder: Path, capfd: pytest.CaptureFixture,
                  monkeypatch: pytest.MonkeyPatch) -> str:
    """Run ``row`` in ``folder``; return its error line after checking the rules above."""
    folder.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(folder)
    arguments = row.args(folder)
    before = snapshot(folder)
    capfd.readouterr()
    monkeypatch.setattr(sys, "argv", [row.command, *arguments])
    with pytest.raises(SystemExit) as stop:
        COMMANDS[row.command].load()()
    out, err = capfd.readouterr()
    code = stop.value.code
    if isinstance(code, str):  # sys.exit("message"): Python prints it and exits 1
        err, code = err + code + "\n", 1
    text = out + err
    assert "Traceback" not in text, text[-3000:]
    assert code == 1, f"exit status {code}: {text[-2000:]}"
    errors = [line for line in text.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, text[-2000:]
    assert row.culprit in errors[0], f"{errors[0]!r} does not name {row.culprit!r}"
    after = snapshot(folder)
    assert not left_behind(before, after), left_behind(before, after)
    for log in {name for name in after if Path(name).name == "train.log"} - set(before):
        assert (folder / log).read_text().splitlines() == [errors[0]], log
    return errors[0]
