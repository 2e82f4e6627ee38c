"""What every dwiml command shares: one-line errors for bad input."""
from __future__ import annotations

import sys
from collections.abc import Callable

from dwiml.errors import DwimlError


def run_command(name: str, body: Callable[[], None]) -> None:
    """Run ``body``; bad input ends the command with ``name: error: ...`` and exit status 1."""
    try:
        body()
    except DwimlError as e:
        sys.exit(f"{name}: error: {e}")
