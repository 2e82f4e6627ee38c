"""Heads that predict a distribution of directions (one component, or a mixture of K);
loss = negative log-likelihood of the unit target."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn import functional as F

from dwiml.config.schema import GaussianMixtureConfig
from dwiml.errors import DwimlError
from dwiml.models.heads.base import DirectionHead, draw_class
from dwiml.ranges import check_all, rules_of

LOG_2PI = math.log(2 * math.pi)


class Family(NamedTuple):
    """A family of distributions of directions, each given by ``size`` parameters ``(..., size)``."""

    size: int
    log_prob: Callable[[Tensor, Tensor], Tensor]  # (params (..., size), unit x (..., 3)) -> (...)
    mode: Callable[[Tensor], Tensor]  # params (N, size) -> unit (N, 3)
    draw: Callable[[Tensor, torch.Generator], Tensor]  # (params (N, size), generator) -> unit (N, 3)


class SingleDistribution(DirectionHead):
    """One distribution of the subclass's ``family``."""

    family: Family

    def __init__(self, in_size: int, hidden_sizes: list[int] | tuple[int, ...] = (), eos_weight: float = 0.0):
        super().__init__(in_size, self.family.size, hidden_sizes, eos_weight)

    def direction_loss(self, params: Tensor, targets: Tensor) -> Tensor:
        return -self.family.log_prob(params, targets)

    def mode(self, params: Tensor) -> Tensor:
        return self.family.mode(params)

    def draw(self, params: Tensor, generator: torch.Generator) -> Tensor:
        return self.family.draw(params, generator)


class MixtureDistribution(DirectionHead):
    """A mixture of ``nb_components`` distributions of the subclass's ``family``.

    Outputs: K mixture logits, then each component's parameters. Direction: the mode of the
    component with the largest weight; sample: a component drawn by weight, then a sample of it.
    """

    family: Family

    def __init__(self, in_size: int, nb_components: int = 3, hidden_sizes: list[int] | tuple[int, ...] = (),
                 eos_weight: float = 0.0):
        check_all(dict(nb_components=nb_components), rules_of(GaussianMixtureConfig), "model.head.".__add__)
        self.nb_components = nb_components
        super().__init__(in_size, nb_components * (1 + self.family.size), hidden_sizes, eos_weight)

    def split(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """Mixture logits ``(N, K)`` and component parameters ``(N, K, size)``."""
        k = self.nb_components
        return params[:, :k], params[:, k:].unflatten(1, (k, self.family.size))

    def direction_loss(self, params: Tensor, targets: Tensor) -> Tensor:
        logits, components = self.split(params)
        log_probs = F.log_softmax(logits, dim=-1) + self.family.log_prob(components, targets[:, None])
        return -torch.logsumexp(log_probs, dim=-1)

    def mode(self, params: Tensor) -> Tensor:
        logits, components = self.split(params)
        rows = torch.arange(len(params), device=params.device)
        return self.family.mode(components[rows, logits.argmax(dim=-1)])

    def draw(self, params: Tensor, generator: torch.Generator) -> Tensor:
        logits, components = self.split(params)
        rows = torch.arange(len(params), device=params.device)
        return self.family.draw(components[rows, draw_class(logits, generator)], generator)
