"""A device setting (``device=cuda``, ``--device cuda:1``) checked against this machine before any work."""
from __future__ import annotations

import torch

from dwiml.errors import DwimlError


def check_device(device: str, key: str = "device") -> None:
    """A one-line error naming ``key`` when ``device`` is no device name, or one this machine lacks
    (CUDA, a CUDA device index beyond its GPUs, Apple's MPS)."""
    where = f"{key}={device}"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise DwimlError(f"{where}: not a device (cpu, cuda, cuda:N or mps)") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise DwimlError(f"{where}: CUDA is not available on this machine")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise DwimlError(f"{where}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise DwimlError(f"{where}: MPS is not available on this machine")
    elif parsed.type != "cpu":
        raise DwimlError(f"{where}: dwiml runs on cpu, cuda or mps")
