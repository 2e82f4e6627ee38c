"""Distributed data parallel (DDP) plumbing: the process group set up by ``torchrun``.

``torchrun --nproc_per_node=N train.py trainer.strategy=ddp`` starts N processes with
``RANK``/``WORLD_SIZE`` in their environment. :func:`init_from_environment` joins them in
one process group (gloo for CPU tensors and NCCL for CUDA tensors when available). Every
helper below is also correct in a single process, where it does nothing.
"""
from __future__ import annotations

import os
from datetime import datetime

import torch
import torch.distributed as dist
from torch import Tensor, nn


def init_from_environment() -> None:
    """Join the process group described by torchrun's environment variables, if any."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group()  # no backend given: gloo for CPU tensors, nccl for CUDA ones


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def shared_time() -> datetime:
    """Rank 0's clock, so every rank names the same run folder."""
    now = [datetime.now()]
    if dist.is_initialized():
        dist.broadcast_object_list(now, src=0)
    return now[0]


def all_gather(tensor: Tensor) -> Tensor:
    """``(world_size, *tensor.shape)``: every rank's ``tensor``."""
    if not dist.is_initialized():
        return tensor.unsqueeze(0)
    out = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(out, tensor)
    return torch.stack(out)


def all_gather_objects(obj: object) -> list:
    if not dist.is_initialized():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel (gradients averaged over ranks)."""
    wrapped = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    wrapped.compute_loss = model.compute_loss  # steps call model.compute_loss: reach the wrapped model's
    return wrapped
