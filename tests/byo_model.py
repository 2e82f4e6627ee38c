"""An example of a model of one's own (README, "Bring your own model"): an MLP on each point's
input and previous direction, trained with ``model=custom model._target_=tests.byo_model.MyModel``."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dwiml.models.heads import CosineRegression
from dwiml.models.interface import head_loss


class MyModel(nn.Module):
    def __init__(self, input_size: int, hidden_size: int = 32,
                 head: Callable[[int], nn.Module] = CosineRegression):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(input_size + 3, hidden_size), nn.ReLU())
        self.head = head(hidden_size)

    def forward(self, inputs: Tensor, lengths: Tensor, directions: Tensor) -> Tensor:
        first = torch.zeros(len(inputs), dtype=torch.bool, device=inputs.device)
        first[torch.cumsum(lengths, 0) - lengths] = True
        previous = torch.where(first[:, None], 0.0, directions.roll(1, dims=0))
        return self.head(self.layers(torch.cat([inputs, F.normalize(previous, dim=1)], dim=1)))

    def compute_loss(self, outputs: Tensor, target_dirs: Tensor,
                     eos_targets: Tensor | None = None) -> tuple[Tensor, int]:
        return head_loss(self.head, outputs, target_dirs, eos_targets)

    def initial_state(self, batch_size: int, device: torch.device | str) -> dict[str, Tensor]:
        return {}

    def track_step(self, inputs: Tensor, last_dirs: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict]:
        return self.head(self.layers(torch.cat([inputs, F.normalize(last_dirs, dim=1)], dim=1))), state
