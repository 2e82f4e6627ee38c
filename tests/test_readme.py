"""The README's command blocks run as written. pytest-codeblocks reads the blocks and their markers
(``<!--pytest.mark.skip(reason=...)-->`` above a block, ``<!--pytest-codeblocks:cont-->`` to join a
hidden set-up block to the next one); each block runs in bash with ``set -e`` in a temporary folder
standing for the repository root, with the venv's commands first on PATH, HOME in a temporary
folder whose ``~/.cache/dwiml`` is the test phantom cache, and the small training overrides of
``tests/helpers/readme.sh``."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pytest_codeblocks import extract_from_file

from dwiml.data.builtin import phantom_hdf5
from helpers import ROOT

PRELUDE = ROOT / "tests" / "helpers" / "readme.sh"


def _param(block) -> pytest.param:
    marks = [eval(mark, {"sys": sys, "pytest": pytest}) for mark in block.marks]  # as pytest-codeblocks does
    return pytest.param(block, marks=marks, id=f"line {block.lineno}")


BLOCKS = [_param(b) for b in extract_from_file(ROOT / "README.md") if b.syntax in ("bash", "sh", "python")]


def run_block(code: str, syntax: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run one block's code as the README reader would, after the prelude (bash) or alone (python)."""
    args = [sys.executable, "-c", code] if syntax == "python" else ["bash", "-c", f"source {PRELUDE}\n{code}"]
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def readme_env(cache_dir, tmp_path_factory) -> dict[str, str]:
    """The blocks' environment; the default phantom (5 subjects) is generated once into the test cache."""
    phantom_hdf5(cache_dir, nb_subjects=5, seed=1234)
    home = tmp_path_factory.mktemp("home")
    (home / ".cache").mkdir()
    (home / ".cache" / "dwiml").symlink_to(cache_dir)
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(home), "DWIML_CACHE_DIR": str(cache_dir), "REPO": str(ROOT), "MPLBACKEND": "Agg"}


def test_a_failing_command_fails_its_block(tmp_path):
    assert run_block("false\ntrue", "bash", tmp_path, dict(os.environ)).returncode != 0


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS)
def test_readme_block(block, readme_env, tmp_path):
    for name in ("train.py", "scripts"):
        (tmp_path / name).symlink_to(ROOT / name)
    result = run_block(block.code, block.syntax, tmp_path, readme_env)
    assert result.returncode == 0, (f"README.md line {block.lineno} failed (exit {result.returncode}):\n{block.code}\n"
                                    f"--- stdout\n{result.stdout[-2000:]}\n--- stderr\n{result.stderr[-4000:]}")
