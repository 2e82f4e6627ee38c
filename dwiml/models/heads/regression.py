"""Regression heads: the output is the direction itself (a point estimate).

A point estimate has no spread, so its probabilistic direction is its direction.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from dwiml.models.heads.base import DirectionHead


class _Regression(DirectionHead):
    """Three outputs: a direction vector."""

    def __init__(self, in_size: int, hidden_sizes: list[int] | tuple[int, ...] = (), eos_weight: float = 0.0):
        super().__init__(in_size, 3, hidden_sizes, eos_weight)

    def mode(self, params: Tensor) -> Tensor:
        return F.normalize(params, dim=-1)

    def draw(self, params: Tensor, generator: torch.Generator) -> Tensor:
        return self.mode(params)


def cosine_loss(params: Tensor, targets: Tensor) -> Tensor:
    return 1.0 - F.cosine_similarity(params, targets, dim=-1)


def l2_loss(params: Tensor, targets: Tensor) -> Tensor:
    return torch.linalg.vector_norm(params - targets, dim=-1)


class CosineRegression(_Regression):
    """Loss ``1 - cos(output, target)``."""

    def direction_loss(self, params: Tensor, targets: Tensor) -> Tensor:
        return cosine_loss(params, targets)


class L2Regression(_Regression):
    """Loss ``||output - target||`` against the unit target."""

    def direction_loss(self, params: Tensor, targets: Tensor) -> Tensor:
        return l2_loss(params, targets)


class CosinePlusL2Regression(_Regression):
    """Loss ``1 - cos(output, target) + ||output - target||``."""

    def direction_loss(self, params: Tensor, targets: Tensor) -> Tensor:
        return cosine_loss(params, targets) + l2_loss(params, targets)
