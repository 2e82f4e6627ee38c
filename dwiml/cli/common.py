"""What every dwiml command shares: its parser (``--version``, one-line usage errors), one-line errors for bad
input, outputs refused when they exist (unless ``-f``), and the options of commands that load a trained model."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from dwiml import __version__
from dwiml.errors import DwimlError


class Parser(argparse.ArgumentParser):
    """The parser of a dwiml command (``prog``: its name): ``--version``, and a usage error is one line
    ``prog: error: ...`` with exit status 1, like every other bad input."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument("--version", action="version", version=f"%(prog)s {__version__}")

    def error(self, message: str) -> NoReturn:
        sys.exit(f"{self.prog}: error: {message}")


def run_command(name: str, body: Callable[[], None]) -> None:
    """Run ``body``; bad input ends the command with ``name: error: ...`` and exit status 1."""
    try:
        body()
    except DwimlError as e:
        sys.exit(f"{name}: error: {e}")


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    """``-f/--overwrite``: replace the command's existing outputs (refused otherwise, see :func:`check_output`)."""
    parser.add_argument("-f", "--overwrite", action="store_true", help="replace existing outputs")


def check_output(path: str | Path, overwrite: bool, folder: bool = False) -> Path:
    """Refuse the output ``path`` (a file, or a ``folder``) before any work: if it exists, unless ``overwrite``
    (an empty folder may be filled), if it is a folder where a file is expected or the reverse, or if its parent
    folder does not exist or is not writable."""
    path = Path(path)
    if path.is_dir() != folder and path.exists():
        raise DwimlError(f"{path} is a {'file' if folder else 'folder'}, not a {'folder' if folder else 'file'}")
    if path.exists() and not overwrite and not (folder and not any(path.iterdir())):
        raise DwimlError(f"{path} exists (-f to replace it)")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise DwimlError(f"{path}: {parent} {'is not a folder' if parent.exists() else 'does not exist'}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DwimlError(f"{path}: folder {parent} is not writable")
    return path


def add_model_weights_arguments(parser: argparse.ArgumentParser) -> None:
    """``--use-latest-epoch`` and ``--allow-mismatch``: which weights of a run folder, and whether an input that
    differs from the model's input specification may proceed (every command that loads a trained model)."""
    parser.add_argument("--use-latest-epoch", action="store_true",
                        help="the weights of the run folder's latest checkpoint instead of best_model/")
    parser.add_argument("--allow-mismatch", action="store_true",
                        help="proceed when the input's declared SH basis/order or channels, or the step size, "
                             "differ from the model's training")
