"""What every direction head shares: optional hidden layers, the optional end-of-streamline
(EOS) output, and the masking of the direction loss at EOS rows."""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dwiml.config.schema import HeadConfig
from dwiml.errors import DwimlError
from dwiml.ranges import check_all, rules_of


def mlp(in_size: int, hidden_sizes: list[int] | tuple[int, ...], out_size: int) -> nn.Sequential:
    """Linear + ReLU for each hidden size, then a linear output layer."""
    sizes = [in_size, *hidden_sizes]
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], out_size))


class DirectionHead(nn.Module, ABC):
    """The last layers of a model: features ``(N, in_size)`` -> raw outputs ``(N, out_size)``.

    The outputs are ``nb_params`` parameters of a distribution of directions, plus one EOS
    logit in the last column when ``eos_weight > 0``. A subclass says what the parameters
    mean through three methods on them: ``direction_loss`` (against unit targets),
    ``mode`` and ``draw`` (unit directions).
    """

    def __init__(self, in_size: int, nb_params: int, hidden_sizes: list[int] | tuple[int, ...] = (),
                 eos_weight: float = 0.0):
        super().__init__()
        check_all(dict(hidden_sizes=hidden_sizes, eos_weight=eos_weight), rules_of(HeadConfig), "model.head.".__add__)
        self.eos_weight = eos_weight
        self.layers = mlp(in_size, hidden_sizes, nb_params + self.has_eos)

    @property
    def has_eos(self) -> bool:
        """Whether the head has an end-of-streamline output (``eos_weight > 0``)."""
        return self.eos_weight > 0

    def forward(self, features: Tensor) -> Tensor:
        return self.layers(features)

    def loss(self, outputs: Tensor, target_dirs: Tensor, eos_targets: Tensor | None = None) -> Tensor:
        """Per-row loss ``(N,)`` against segment vectors ``target_dirs`` ``(N, 3)`` (any length).

        With an EOS output, ``eos_targets`` ``(N,)`` (bool) marks the last point of each
        streamline: the direction loss is zero there (``target_dirs`` are ignored), and
        ``eos_weight`` times the binary cross-entropy of the EOS output is added on every row.
        """
        if not self.has_eos:
            if eos_targets is not None:
                raise DwimlError("step.add_eos_target=true gives end-of-streamline targets, but the head has no "
                                 "end-of-streamline output (set model.head.eos_weight > 0)")
            return self.direction_loss(outputs, F.normalize(target_dirs, dim=-1))
        if eos_targets is None:
            raise DwimlError("model.head.eos_weight > 0 gives the head an end-of-streamline output, whose "
                             "loss needs the targets of step.add_eos_target=true")
        ends = eos_targets.bool()
        safe = torch.where(ends[:, None], torch.ones_like(target_dirs), target_dirs)  # zeros or NaN at ends
        direction = self.direction_loss(outputs[:, :-1], F.normalize(safe, dim=-1))
        eos = F.binary_cross_entropy_with_logits(outputs[:, -1], ends.to(outputs.dtype), reduction="none")
        return direction.masked_fill(ends, 0.0) + self.eos_weight * eos

    def direction(self, outputs: Tensor) -> Tensor:
        """Deterministic unit directions ``(N, 3)``."""
        return self.mode(self.params(outputs))

    def sample(self, outputs: Tensor, generator: torch.Generator) -> Tensor:
        """Unit directions ``(N, 3)`` drawn from the predicted distributions, with ``generator``
        (on the outputs' device)."""
        return self.draw(self.params(outputs), generator)

    def eos_probability(self, outputs: Tensor) -> Tensor | None:
        """Probability ``(N,)`` that each point ends its streamline; None without an EOS output."""
        return torch.sigmoid(outputs[:, -1]) if self.has_eos else None

    def params(self, outputs: Tensor) -> Tensor:
        """The distribution parameters: the outputs without the EOS column."""
        return outputs[:, :-1] if self.has_eos else outputs

    @abstractmethod
    def direction_loss(self, params: Tensor, targets: Tensor) -> Tensor:
        """Per-row loss ``(N,)`` against unit ``targets`` ``(N, 3)``."""

    @abstractmethod
    def mode(self, params: Tensor) -> Tensor:
        """Deterministic unit directions ``(N, 3)``."""

    @abstractmethod
    def draw(self, params: Tensor, generator: torch.Generator) -> Tensor:
        """Unit directions ``(N, 3)`` drawn with ``generator``."""


def draw_class(logits: Tensor, generator: torch.Generator) -> Tensor:
    """One class index ``(N,)`` per row, drawn with probabilities ``softmax(logits)``."""
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)[:, 0]
