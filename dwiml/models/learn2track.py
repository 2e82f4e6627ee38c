"""Learn2Track: a stacked RNN over the inputs interpolated along each streamline."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from dwiml.errors import DwimlError
from dwiml.models.embeddings import IdentityEmbedding, PreviousDirections
from dwiml.models.interface import State, head_loss
from dwiml.models.packing import pack, pad, prefer_padded, unpack, unpad

RNN_TYPES = {"lstm": nn.LSTM, "gru": nn.GRU}
CPU_GATES_ROWS = 512  # from this many rows on the CPU, lstm_step computes the gates itself (fewer rows: lstm_cell)


class Learn2Track(nn.Module):
    """Stacked LSTM/GRU layers (sizes ``hidden_sizes``) and a direction head.

    At each point the RNN sees the embedded input and, optionally, the embedded
    ``nb_previous_dirs`` previous segment directions (zeros where there are none yet).
    Each layer is followed by layer norm (optional) and dropout; with skip connections
    the head sees the outputs of every layer.
    """

    def __init__(self, input_size: int, head: Callable[[int], nn.Module], rnn_type: str,
                 hidden_sizes: list[int] | tuple[int, ...] = (64, 64), nb_previous_dirs: int = 1,
                 prev_dirs_embedding_size: int | None = None,
                 input_embedding: Callable[[int], nn.Module] = IdentityEmbedding,
                 dropout: float = 0.0, layer_norm: bool = False, skip_connections: bool = False):
        super().__init__()
        if rnn_type not in RNN_TYPES:
            raise DwimlError(f"model.rnn_type must be one of {sorted(RNN_TYPES)}, got '{rnn_type}'")
        if not hidden_sizes:
            raise DwimlError("model.hidden_sizes must list at least one layer size")
        self.rnn_type, self.hidden_sizes = rnn_type, list(hidden_sizes)
        self.skip_connections = skip_connections
        self.input_embedding = input_embedding(input_size)
        self.previous_dirs = PreviousDirections(nb_previous_dirs, prev_dirs_embedding_size)
        sizes = [self.input_embedding.out_size + self.previous_dirs.out_size, *hidden_sizes]
        self.rnns = nn.ModuleList(RNN_TYPES[rnn_type](a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.norms = nn.ModuleList(nn.LayerNorm(b) if layer_norm else nn.Identity() for b in hidden_sizes)
        self.dropout = nn.Dropout(dropout)
        self.head = head(sum(hidden_sizes) if skip_connections else hidden_sizes[-1])
        self.padded: bool | None = None  # the RNNs' layout: None picks per batch (see dwiml.models.packing)

    def forward(self, inputs: Tensor, lengths: Tensor, directions: Tensor | None = None) -> Tensor:
        """Head outputs at every point: ``inputs`` ``(N, F)`` packed, ``lengths`` ``(B,)``.

        ``directions`` ``(N, 3)`` are the segment directions leaving each point; point ``i``
        is given the ones leaving points ``i-1 ... i-nb_previous_dirs``.
        """
        x = self.input_embedding(inputs)
        if self.previous_dirs.nb_previous_dirs:
            x = torch.cat([x, self.previous_dirs(directions, lengths)], dim=1)
        if self.padded if self.padded is not None else prefer_padded(lengths):
            return self.head(self._padded_features(x, lengths))
        x, index = pack(x, lengths)
        layer_outputs = []
        for rnn, norm in zip(self.rnns, self.norms):
            x, _ = rnn(x)
            x = x._replace(data=self.dropout(norm(x.data)))
            layer_outputs.append(x.data)
        return self.head(unpack(self._features(layer_outputs), index))

    def _padded_features(self, x: Tensor, lengths: Tensor) -> Tensor:
        """The head's input at every packed point, the RNNs run on zero-padded sequences (padding
        at the ends: the points' outputs are the same as with a PackedSequence)."""
        x, index = pad(x, lengths)
        layer_outputs = []
        for rnn, norm in zip(self.rnns, self.norms):
            x, _ = rnn(x)
            x = self.dropout(norm(x))
            layer_outputs.append(unpad(x, index))
        return self._features(layer_outputs)

    def compute_loss(self, outputs: Tensor, target_dirs: Tensor,
                     eos_targets: Tensor | None = None) -> tuple[Tensor, int]:
        """Mean loss over points, and the number of points."""
        return head_loss(self.head, outputs, target_dirs, eos_targets)

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        """Zero hidden states (``h<layer>``, and ``c<layer>`` for LSTMs), no previous direction."""
        state = {"previous_dirs": self.previous_dirs.initial_history(batch_size, device)}
        for i, size in enumerate(self.hidden_sizes):
            for name in ("h", "c") if self.rnn_type == "lstm" else ("h",):
                state[f"{name}{i}"] = torch.zeros(batch_size, size, device=device)
        return state

    def track_step(self, inputs: Tensor, last_dirs: Tensor, state: State) -> tuple[Tensor, State]:
        """One point per streamline: ``inputs`` ``(B, F)``, ``last_dirs`` ``(B, 3)``."""
        x = self.input_embedding(inputs)
        previous, history = self.previous_dirs.step(last_dirs, state["previous_dirs"])
        if self.previous_dirs.nb_previous_dirs:
            x = torch.cat([x, previous], dim=1)
        new_state = {"previous_dirs": history}
        layer_outputs = []
        for i, (rnn, norm) in enumerate(zip(self.rnns, self.norms)):
            # One time step with the layer's own weights (no sequence machinery).
            if self.rnn_type == "lstm":
                h, new_state[f"c{i}"] = lstm_step(x, state[f"h{i}"], state[f"c{i}"], rnn)
            else:
                h = torch.gru_cell(x, state[f"h{i}"], rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0,
                                   rnn.bias_hh_l0)
            new_state[f"h{i}"] = h
            x = norm(h)
            x = self.dropout(x) if self.training else x
            layer_outputs.append(x)
        return self.head(self._features(layer_outputs)), new_state

    def _features(self, layer_outputs: list[Tensor]) -> Tensor:
        return torch.cat(layer_outputs, dim=1) if self.skip_connections else layer_outputs[-1]


def lstm_step(x: Tensor, h: Tensor, c: Tensor, rnn: nn.LSTM) -> tuple[Tensor, Tensor]:
    """One time step of the one-layer LSTM ``rnn``: the new ``h`` and ``c``, as ``torch.lstm_cell``.

    On the CPU with many rows (``CPU_GATES_ROWS``), the gates come from one matrix product of
    ``[x, h]`` and go through one sigmoid, with ``tanh(a) = 2 sigmoid(2a) - 1`` (the CPU's tanh is
    several times slower than its sigmoid): fewer passes over the ``(B, 4H)`` gates than
    ``lstm_cell``'s two products and separate activations. Equal to it within float rounding.
    """
    weights = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
    if x.device.type != "cpu" or len(x) < CPU_GATES_ROWS:
        return torch.lstm_cell(x, (h, c), *weights)
    w_ih, w_hh, b_ih, b_hh = weights
    weight, bias = _sigmoid_gates(torch.cat([w_ih, w_hh], dim=1)), _sigmoid_gates(b_ih + b_hh)
    i, f, o, g = torch.addmm(bias, torch.cat([x, h], dim=1), weight.T).sigmoid_().chunk(4, dim=1)
    c = torch.mul(f, c).addcmul_(i, g, value=2).sub_(i)  # f c + i tanh(g), g being sigmoid(2 g)
    return torch.mul(c, 2).sigmoid_().mul(2).sub_(1).mul_(o), c  # o tanh(c) (in place where autograd allows)


def _sigmoid_gates(rows: Tensor) -> Tensor:
    """An LSTM's gate rows ``(i, f, g, o)`` reordered as ``(i, f, o, 2 g)``: one sigmoid of all the gates
    then gives ``sigmoid(2 g)``, from which ``tanh(g)``."""
    size = len(rows) // 4
    i_f, g, o = rows.tensor_split([2 * size, 3 * size])
    return torch.cat([i_f, o, 2 * g])
