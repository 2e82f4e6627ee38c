"""Embeddings of the inputs and of the previous directions.

An input embedding is built as ``embedding(in_size)`` from a partial config and exposes
``out_size``; it maps rows ``(N, in_size)`` to ``(N, out_size)``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from dwiml.data.streamlines import point_local_ids
from dwiml.errors import DwimlError

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def make_activation(name: str | None) -> nn.Module:
    if name is None:
        return nn.Identity()
    if name not in ACTIVATIONS:
        raise DwimlError(f"activation must be one of {sorted(ACTIVATIONS)} or null, got '{name}'")
    return ACTIVATIONS[name]()


class IdentityEmbedding(nn.Identity):
    """The inputs as they are."""

    def __init__(self, in_size: int):
        super().__init__()
        self.out_size = in_size


class LinearEmbedding(nn.Sequential):
    """One linear layer, then an activation (``null`` for none)."""

    def __init__(self, in_size: int, out_size: int = 64, activation: str | None = "relu"):
        super().__init__(nn.Linear(in_size, out_size), make_activation(activation))
        self.out_size = out_size


class CNNEmbedding(nn.Module):
    """3D convolutions over a ``grid`` neighborhood of ``width`` = 2r+1 points per axis.

    Each input row holds the ``width**3`` neighbours in C order of their offsets
    ``(dx, dy, dz)``, each with its ``nb_features`` features: ``(N, width**3 * nb_features)``.
    Convolutions have no padding; the output is flattened.
    """

    def __init__(self, in_size: int, width: int = 3, channels: list[int] | tuple[int, ...] = (16,),
                 kernel_size: int = 2):
        super().__init__()
        if in_size % width**3:
            raise DwimlError(f"CNN embedding: input size {in_size} is not a multiple of width**3 = {width**3}; "
                             "is the step's neighborhood a grid of that width?")
        out_width = width - len(channels) * (kernel_size - 1)
        if out_width < 1:
            raise DwimlError(f"CNN embedding: {len(channels)} convolutions of kernel {kernel_size} "
                             f"do not fit a neighborhood of width {width}")
        self.width, self.nb_features = width, in_size // width**3
        sizes = [self.nb_features, *channels]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Conv3d(a, b, kernel_size), nn.ReLU()]
        self.layers = nn.Sequential(*layers, nn.Flatten())
        self.out_size = channels[-1] * out_width**3

    def forward(self, x: Tensor) -> Tensor:
        w = self.width
        return self.layers(x.reshape(-1, w, w, w, self.nb_features).permute(0, 4, 1, 2, 3))


class PreviousDirections(nn.Module):
    """The ``nb_previous_dirs`` previous unit directions of each point, embedded.

    Identity (``3 * nb_previous_dirs`` values) when ``out_size`` is null, else one linear
    layer. Directions that do not exist yet (near the first point) are zeros.
    """

    def __init__(self, nb_previous_dirs: int, out_size: int | None = None):
        super().__init__()
        self.nb_previous_dirs = nb_previous_dirs
        size = 3 * nb_previous_dirs
        self.embedding = nn.Linear(size, out_size) if out_size and nb_previous_dirs else nn.Identity()
        self.out_size = out_size if out_size and nb_previous_dirs else size

    def forward(self, directions: Tensor, lengths: Tensor) -> Tensor:
        """``(N, out_size)`` from the packed segment directions leaving each point ``(N, 3)``."""
        return self.embedding(self.gather(directions, lengths))

    def gather(self, directions: Tensor, lengths: Tensor) -> Tensor:
        """``(N, 3 * nb_previous_dirs)``: the previous unit directions, most recent first."""
        unit = nn.functional.normalize(directions, dim=1)
        local = point_local_ids(lengths)
        rows = torch.arange(len(unit), device=unit.device)
        parts = [torch.where((local >= k)[:, None], unit[(rows - k).clamp_min(0)], 0.0)
                 for k in range(1, self.nb_previous_dirs + 1)]
        return torch.cat(parts, dim=1) if parts else unit.new_zeros(len(unit), 0)

    def initial_history(self, batch_size: int, device: torch.device | str) -> Tensor:
        return torch.zeros(batch_size, self.nb_previous_dirs, 3, device=device)

    def step(self, last_dirs: Tensor, history: Tensor) -> tuple[Tensor, Tensor]:
        """Tracking: push ``last_dirs`` ``(B, 3)`` (zeros at the first point) into the
        ``(B, nb_previous_dirs, 3)`` history; return the embedding and the new history."""
        unit = nn.functional.normalize(last_dirs, dim=1)[:, None]
        history = torch.cat([unit, history[:, :-1]], dim=1) if self.nb_previous_dirs else history
        return self.embedding(history.flatten(1)), history
