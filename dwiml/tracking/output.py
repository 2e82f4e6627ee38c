"""Writing tractograms: under a temporary name, renamed into place when complete."""
from __future__ import annotations

from pathlib import Path

from dipy.io.stateful_tractogram import StatefulTractogram
from dipy.io.streamline import save_tractogram

from dwiml.atomic import atomic_path
from dwiml.errors import DwimlError

TRACTOGRAM_SUFFIXES = (".trk", ".tck", ".trx")


def check_tractogram_path(path: str | Path) -> None:
    """A one-line error for an output tractogram whose extension names no format dipy writes."""
    if Path(path).suffix not in TRACTOGRAM_SUFFIXES:
        raise DwimlError(f"{path}: the output must end in {', '.join(TRACTOGRAM_SUFFIXES)}")


def save_tractogram_atomic(sft: StatefulTractogram, path: str | Path) -> Path:
    """Save ``sft`` (.trk, .tck, .trx: chosen by the extension) so a crash never leaves a partial file."""
    with atomic_path(path) as tmp:
        save_tractogram(sft, str(tmp), bbox_valid_check=True)
    return Path(path)
