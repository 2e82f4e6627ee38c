"""Writing tractograms: under a temporary name, renamed into place when complete."""
from __future__ import annotations

import os
from pathlib import Path

from dipy.io.stateful_tractogram import StatefulTractogram
from dipy.io.streamline import save_tractogram


def save_tractogram_atomic(sft: StatefulTractogram, path: str | Path) -> Path:
    """Save ``sft`` (.trk, .tck, .trx: chosen by the extension) so a crash never leaves a partial file."""
    path = Path(path)
    tmp = path.with_name(f"{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        save_tractogram(sft, str(tmp), bbox_valid_check=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
