"""Learn2Track: a stacked RNN over the inputs interpolated along each streamline."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from dwiml.data.streamlines import point_local_ids
from dwiml.errors import DwimlError
from dwiml.models.packing import pack, unpack

RNN_TYPES = {"lstm": nn.LSTM, "gru": nn.GRU}


class Learn2Track(nn.Module):
    """Stacked LSTM/GRU layers (sizes ``hidden_sizes``) and a direction head.

    At each point the RNN sees the interpolated input and, optionally, the
    ``nb_previous_dirs`` previous segment directions (zeros where there are none yet).
    """

    def __init__(self, input_size: int, head: Callable[[int], nn.Module], rnn_type: str = "lstm",
                 hidden_sizes: list[int] | tuple[int, ...] = (64, 64), nb_previous_dirs: int = 0,
                 dropout: float = 0.0, layer_norm: bool = False, skip_connections: bool = False):
        super().__init__()
        if rnn_type not in RNN_TYPES:
            raise DwimlError(f"model.rnn_type must be one of {sorted(RNN_TYPES)}, got '{rnn_type}'")
        if not hidden_sizes:
            raise DwimlError("model.hidden_sizes must list at least one layer size")
        self.nb_previous_dirs = nb_previous_dirs
        self.skip_connections = skip_connections
        sizes = [input_size + 3 * nb_previous_dirs, *hidden_sizes]
        self.rnns = nn.ModuleList(RNN_TYPES[rnn_type](a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.norms = nn.ModuleList(nn.LayerNorm(b) if layer_norm else nn.Identity() for b in hidden_sizes)
        self.dropout = nn.Dropout(dropout)
        out_size = sum(hidden_sizes) if skip_connections else hidden_sizes[-1]
        self.head = head(out_size)

    def forward(self, inputs: Tensor, lengths: Tensor, directions: Tensor | None = None) -> Tensor:
        """Head outputs at every point: ``inputs`` ``(N, F)`` packed, ``lengths`` ``(B,)``.

        ``directions`` ``(N, 3)`` are the segment directions leaving each point; point ``i``
        is given the ones leaving points ``i-1 ... i-nb_previous_dirs``.
        """
        if self.nb_previous_dirs:
            inputs = torch.cat([inputs, self.previous_directions(directions, lengths)], dim=1)
        x, index = pack(inputs, lengths)
        layer_outputs = []
        for rnn, norm in zip(self.rnns, self.norms):
            x, _ = rnn(x)
            x = x._replace(data=self.dropout(norm(x.data)))
            layer_outputs.append(x.data)
        features = torch.cat(layer_outputs, dim=1) if self.skip_connections else x.data
        return self.head(unpack(features, index))

    def previous_directions(self, directions: Tensor, lengths: Tensor) -> Tensor:
        """``(N, 3 * nb_previous_dirs)``: normalized previous directions, zeros before the start."""
        unit = nn.functional.normalize(directions, dim=1)
        local = point_local_ids(lengths)
        rows = torch.arange(len(unit), device=unit.device)
        parts = []
        for k in range(1, self.nb_previous_dirs + 1):
            has = (local >= k)[:, None]
            parts.append(torch.where(has, unit[(rows - k).clamp_min(0)], 0.0))
        return torch.cat(parts, dim=1)

    def compute_loss(self, outputs: Tensor, target_dirs: Tensor) -> tuple[Tensor, int]:
        """Mean loss over points, and the number of points."""
        return self.head.loss(outputs, target_dirs).mean(), len(target_dirs)
