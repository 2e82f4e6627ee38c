"""Files and folders written atomically: to a temporary name beside the target, renamed into place when
complete, so a crash never leaves a half-written one. Every atomic write of dwiml goes through here."""
from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

COMPLETE = ".complete"  # the last file of a replacing atomic folder: a copy holding it is whole


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s content to (same file name after a hidden prefix, so
    libraries that read the extension still see it); renamed to ``path`` only if the block succeeds,
    removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{socket.gethostname()}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temporaries(path: Path) -> None:
    """Remove the temporaries of ``path`` (see :func:`atomic_path`) that processes of this host left when they
    were killed (SIGKILL, a power cut): those whose process is gone. Another host's are left alone."""
    host = socket.gethostname()
    for tmp in path.parent.glob(f".tmp-*-{glob.escape(path.name)}"):
        pid, _, tmp_host = tmp.name[len(".tmp-"):-len(path.name) - 1].partition("-")
        if tmp_host == host and pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


@contextmanager
def stopped_by_signals(name: str) -> Iterator[None]:
    """SIGTERM and SIGINT end the command ``name`` at once, with status 128 + the signal's number, running
    every ``finally`` on the way: the atomic writes in progress remove their temporaries."""
    def stop(signum: int, frame) -> None:
        print(f"{name}: stopped by {signal.Signals(signum).name}: nothing written", file=sys.stderr)
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def atomic_folder(folder: str | Path, replace: bool = True) -> Iterator[Path]:
    """A temporary folder to fill, moved to ``folder`` only if the block succeeds, removed otherwise.

    ``replace=True`` (one writer at a time, e.g. a run's checkpoint): the temporary folder is
    ``<folder>.tmp``, marked complete (:data:`COMPLETE`) when the block succeeds, and an existing
    ``folder`` is replaced (see :func:`replace_folder`); a swap that a kill cut short is finished first.
    ``replace=False`` (a cache that several processes may fill at once): the temporary folder is
    ``<folder>.tmp-<pid>``, and when another process has created ``folder`` first, its version is kept.
    """
    folder = Path(folder)
    if replace:
        restore_folder(folder)
    tmp = _new_folder(folder) if replace else folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    _remove(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if replace:
            (tmp / COMPLETE).touch()
            replace_folder(tmp, folder)
        else:
            try:
                os.rename(tmp, folder)  # an empty folder is replaced; a filled one raises
            except OSError:
                if not folder.is_dir() or not any(folder.iterdir()):
                    raise
    finally:
        _remove(tmp)


def replace_folder(new: Path, folder: Path) -> None:
    """Move the complete folder ``new`` to ``folder``. The old ``folder`` is kept as ``<folder>.old`` until
    then; a kill at any moment leaves at least one complete copy among ``folder``, ``new`` and ``.old``."""
    old = previous_folder(folder)
    if folder.exists():
        _remove(old)
        os.replace(folder, old)
    os.replace(new, folder)
    _remove(old)


def complete_copy(folder: Path) -> Path | None:
    """``folder`` if complete, else the complete copy a swap cut short left (the new one first), or None."""
    for copy in (folder, _new_folder(folder), previous_folder(folder)):
        if (copy / COMPLETE).is_file():
            return copy
    return None


def restore_folder(folder: Path) -> None:
    """Finish a swap cut short between its two renames: a complete copy takes the missing ``folder``'s place."""
    copy = complete_copy(folder)
    if not folder.exists() and copy is not None:
        os.replace(copy, folder)
        _remove(previous_folder(folder))


def previous_folder(folder: Path) -> Path:
    """Where :func:`replace_folder` keeps the previous version of ``folder`` while it replaces it."""
    return folder.with_name(f"{folder.name}.old")


def _new_folder(folder: Path) -> Path:
    """Where :func:`atomic_folder` writes the next version of ``folder``."""
    return folder.with_name(f"{folder.name}.tmp")


def _remove(folder: Path) -> None:
    """Remove a folder, its completeness mark first (a folder half removed is never taken as complete)."""
    (folder / COMPLETE).unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)
