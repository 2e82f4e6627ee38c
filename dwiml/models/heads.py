"""Direction heads (direction getters): the last layer, its loss and its direction."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class CosineRegression(nn.Module):
    """Regresses a 3D direction; loss ``1 - cos(predicted, target)`` averaged over points."""

    def __init__(self, in_size: int, hidden_sizes: list[int] | tuple[int, ...] = ()):
        super().__init__()
        sizes = [in_size, *hidden_sizes]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.layers = nn.Sequential(*layers, nn.Linear(sizes[-1], 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)

    def loss(self, outputs: Tensor, target_dirs: Tensor) -> Tensor:
        """Per-point loss."""
        return 1.0 - nn.functional.cosine_similarity(outputs, target_dirs, dim=-1)

    def direction(self, outputs: Tensor) -> Tensor:
        """Deterministic unit direction."""
        return nn.functional.normalize(outputs, dim=-1)
