"""Learning-rate schedules built from torch's schedulers, chosen by ``scheduler=``.

Every schedule is stepped once per epoch; ``ReduceLROnPlateau`` gets the trainer's
monitored metric. Presets whose torch class needs no arguments beyond plain numbers
(``constant``, ``step``, ``plateau``) name the torch class directly in their YAML.
"""
from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LinearLR, LRScheduler, SequentialLR

from dwiml.errors import DwimlError


class _EpochFactors:
    """Factor of the initial learning rate at each epoch (the last one kept afterwards)."""

    def __init__(self, factors: list[float]):
        self.factors = factors

    def __call__(self, epoch: int) -> float:
        return self.factors[min(epoch, len(self.factors) - 1)]


def epochs_list(optimizer: Optimizer, learning_rates: list[float]) -> LambdaLR:
    """One learning rate per epoch, e.g. ``[0.003, 0.003, 0.001]``; the last one continues."""
    if not learning_rates or min(learning_rates) <= 0:
        raise DwimlError("scheduler.learning_rates must be a non-empty list of positive values")
    initial = optimizer.param_groups[0]["lr"]
    return LambdaLR(optimizer, _EpochFactors([lr / initial for lr in learning_rates]))


def cosine_warmup(optimizer: Optimizer, warmup_epochs: int, total_epochs: int, start_factor: float = 0.1,
                  min_lr: float = 0.0) -> LRScheduler:
    """A linear warmup over ``warmup_epochs``, then a cosine decay to ``min_lr`` at ``total_epochs``."""
    if not 0 <= warmup_epochs < total_epochs:
        raise DwimlError(f"scheduler.warmup_epochs={warmup_epochs} must be in [0, total_epochs={total_epochs})")
    cosine = CosineAnnealingLR(optimizer, T_max=total_epochs - warmup_epochs, eta_min=min_lr)
    if warmup_epochs == 0:
        return cosine
    warmup = LinearLR(optimizer, start_factor=start_factor, total_iters=warmup_epochs)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_epochs])
