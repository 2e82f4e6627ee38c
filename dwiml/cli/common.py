"""What every dwiml command shares: one-line errors for bad input, and the options of commands that load a
trained model."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from dwiml.errors import DwimlError


def run_command(name: str, body: Callable[[], None]) -> None:
    """Run ``body``; bad input ends the command with ``name: error: ...`` and exit status 1."""
    try:
        body()
    except DwimlError as e:
        sys.exit(f"{name}: error: {e}")


def add_model_weights_arguments(parser: argparse.ArgumentParser) -> None:
    """``--use-latest-epoch`` and ``--allow-mismatch``: which weights of a run folder, and whether an input that
    differs from the model's input specification may proceed (every command that loads a trained model)."""
    parser.add_argument("--use-latest-epoch", action="store_true",
                        help="the weights of the run folder's latest checkpoint instead of best_model/")
    parser.add_argument("--allow-mismatch", action="store_true",
                        help="proceed when the input's declared SH basis/order or channels, or the step size, "
                             "differ from the model's training")

