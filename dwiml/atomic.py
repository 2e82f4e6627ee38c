"""Files and folders written atomically: to a temporary name beside the target, renamed into place when
complete, so a crash never leaves a half-written one. Every atomic write of dwiml goes through here."""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s content to (same file name after a hidden prefix, so
    libraries that read the extension still see it); renamed to ``path`` only if the block succeeds,
    removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_folder(folder: str | Path, replace: bool = True) -> Iterator[Path]:
    """A temporary folder to fill, moved to ``folder`` only if the block succeeds, removed otherwise.

    ``replace=True`` (one writer at a time, e.g. a run's checkpoint): the temporary folder is
    ``<folder>.tmp`` and an existing ``folder`` is replaced, kept as ``<folder>.old`` until the new one
    is in place (see :func:`replace_folder`). ``replace=False`` (a cache that several processes may
    fill at once): the temporary folder is ``<folder>.tmp-<pid>``, and when another process has
    created ``folder`` first, its version is kept.
    """
    folder = Path(folder)
    tmp = folder.with_name(f"{folder.name}.tmp" if replace else f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if replace:
            replace_folder(tmp, folder)
        else:
            try:
                os.rename(tmp, folder)  # an empty folder is replaced; a filled one raises
            except OSError:
                if not folder.is_dir() or not any(folder.iterdir()):
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_folder(new: Path, folder: Path) -> None:
    """Move ``new`` to ``folder``; the old ``folder`` is kept as ``<folder>.old`` until then."""
    old = previous_folder(folder)
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(new, folder)
    shutil.rmtree(old, ignore_errors=True)


def previous_folder(folder: Path) -> Path:
    """Where :func:`replace_folder` keeps the previous version of ``folder`` while it replaces it."""
    return folder.with_name(f"{folder.name}.old")
