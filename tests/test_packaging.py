"""Packaging: the command list of ``python -m dwiml``, the training app's help page and shell
completion (groups and presets, never the schemas), comet_ml as an optional dependency."""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from helpers import ROOT

import dwiml.conf

CONF = Path(dwiml.conf.__file__).parent
FOLDERS = {p.parent.relative_to(CONF).as_posix() for p in CONF.rglob("*.yaml")}
USER_GROUPS = sorted(g for g in FOLDERS if g != "." and not g.startswith("hydra"))


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_python_m_dwiml_lists_every_command(tmp_path):
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    lines = run(["-m", "dwiml"], tmp_path).stdout.splitlines()
    listed = [line.split()[0] for line in lines[1:]]
    assert listed == sorted(scripts)
    assert all(len(line.split()) > 2 for line in lines[1:]), "every command is described"


def test_help_page_describes_groups_and_presets_without_schemas(tmp_path):
    text = run([str(ROOT / "train.py"), "--help"], tmp_path).stdout
    assert "powered by Hydra" not in text and "_schema" not in text
    described = {line.split()[0] for line in text.split("== What the groups are ==")[1].splitlines() if line[:1].isalpha()}
    assert set(USER_GROUPS) <= described
    for group in USER_GROUPS:
        presets = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
        assert f"{group}: {', '.join(presets)}" in text, group
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("line,expected", [
    ("train.py ", {"optim=", "model", "logger=", "dataset="}),
    ("train.py model/head=", {"model/head=cosine", "model/head=gaussian_mixture"}),
])
def test_shell_completion_offers_presets_never_schemas(tmp_path, line, expected):
    words = run([str(ROOT / "train.py"), "-sc", "query=bash"], tmp_path, COMP_LINE=line).stdout.split()
    assert expected <= set(words)
    assert not [w for w in words if "schema" in w]


def test_comet_logger_without_comet_ml_says_how_to_install_it(tmp_path):
    code = ("import sys; sys.modules['comet_ml'] = None  # as if comet_ml were not installed\n"
            "from dwiml.errors import DwimlError\n"
            "from dwiml.training.loggers import CometLogger\n"
            "try:\n"
            f"    CometLogger(offline=True).start({str(tmp_path)!r}, {{}}, None)\n"
            "except DwimlError as e:\n"
            "    print(e)\n")
    assert "pip install 'dwiml[comet]'" in run(["-c", code], tmp_path).stdout
    assert not list(tmp_path.iterdir())
