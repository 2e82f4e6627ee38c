"""Transformers over the points of each streamline, with a key/value cache for tracking.

Three variants (``variant``):

- ``encoder_decoder``: the embedded inputs go to the encoder; the previous directions, after
  a learned start token, go to the decoder, which also attends to the encoder's outputs.
- ``encoder``: an encoder over the embedded inputs only.
- ``encoder_with_directions``: an encoder over the embedded inputs concatenated (feature-wise)
  with the embedded previous direction (the start token at the first point).

All attention is causal: point ``i`` sees points ``0..i`` only, the encoder included (tracking
gives the inputs one point at a time, so an encoder that looked ahead could not be used
there), and the decoder's cross-attention sees the encoder outputs of points ``0..i``. Hence
one tracking step with the cache equals the full forward at that point. Blocks are pre-norm,
attention is ``torch.nn.functional.scaled_dot_product_attention`` (explicit, with its weights kept,
within :meth:`Transformer.recording_attention`), positions are sinusoidal.

Tracking keeps one position per streamline (state ``position`` ``(B,)``), so rows may be at
different points, as in the tracker's replay of a first half. A step writes each row's new keys
and values in place at its own position, and that row then attends to its keys ``0..position``
only: a row stepped with any input and then given its old state back (the tracker's rows that
have not started) is unharmed, since what was written at its position is rewritten before it is read.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dwiml.data.streamlines import point_local_ids, point_streamline_ids
from dwiml.errors import DwimlError
from dwiml.models.embeddings import IdentityEmbedding
from dwiml.models.interface import State, head_loss

VARIANTS = ("encoder_decoder", "encoder", "encoder_with_directions")
INITIAL_CAPACITY = 32  # points held by a new key/value cache before it grows
KV = tuple[Tensor, Tensor]


def sinusoidal_positions(positions: Tensor, size: int) -> Tensor:
    """``(..., size)``: sin at even features, cos at odd ones, of ``position / 10000**(2i/size)``."""
    frequencies = torch.exp(torch.arange(0, size, 2, device=positions.device) * (-math.log(10000.0) / size))
    angles = positions[..., None].float() * frequencies
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)


class Slots(NamedTuple):
    """One tracking step: ``position`` ``(B,)``, where each row writes its new key and value, and
    ``mask`` ``(B, 1, 1, max position + 1)``, the cached keys each row sees (``0..position``)."""

    position: Tensor
    mask: Tensor

    @classmethod
    def at(cls, position: Tensor) -> Slots:
        keys = torch.arange(int(position.max()) + 1, device=position.device)
        return cls(position, keys <= position[:, None, None, None])


class Attention(nn.Module):
    """Multi-head attention of ``x`` over ``context``.

    Without a cache the attention is causal (query ``i`` sees keys ``0..i``). With a cache
    (keys, values) ``(B, heads, capacity, D / heads)`` and ``slots``, ``x`` and ``context`` hold
    one point per row: its key and value are written at the row's position (in place; the capacity
    doubles when full) and its query sees the row's keys up to that position.
    """

    def __init__(self, d_model: int, nheads: int, dropout: float):
        super().__init__()
        self.nheads, self.dropout = nheads, dropout
        self.recorded: list[Tensor] | None = None  # set by Transformer.recording_attention
        self.query = nn.Linear(d_model, d_model)
        self.key_value = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, context: Tensor, cache: KV | None = None,
                slots: Slots | None = None) -> tuple[Tensor, KV]:
        q = self._heads(self.query(x))
        k, v = (self._heads(t) for t in self.key_value(context).chunk(2, dim=-1))
        if cache is None:
            return self._attend(q, k, v), (k, v)
        end = slots.mask.shape[-1]
        k_cache, v_cache = (_write(buffer, new, slots) for buffer, new in zip(cache, (k, v)))
        return self._attend(q, k_cache[:, :, :end], v_cache[:, :, :end], slots.mask), (k_cache, v_cache)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        """Causal attention without ``mask``. While recording, the weights are computed explicitly
        (softmax of the scaled scores, no dropout: evaluation only) and kept."""
        if self.recorded is None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                               dropout_p=self.dropout if self.training else 0.0, is_causal=mask is None)
        else:
            if mask is None:
                mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril()
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
            weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
            self.recorded.append(weights)
            y = weights @ v
        return self.out(y.transpose(1, 2).flatten(2))

    def _heads(self, x: Tensor) -> Tensor:
        """``(B, T, D)`` -> ``(B, heads, T, D / heads)``."""
        return x.unflatten(-1, (self.nheads, -1)).transpose(1, 2)


def _write(buffer: Tensor, new: Tensor, slots: Slots) -> Tensor:
    """``new`` ``(B, heads, 1, .)`` written at each row's position along dim 2 of ``buffer``
    (in place, or in a larger copy if it is full)."""
    end, capacity = slots.mask.shape[-1], buffer.shape[2]
    if end > capacity:
        grown = buffer.new_zeros(*buffer.shape[:2], 2 * end, buffer.shape[3])
        grown[:, :, :capacity] = buffer
        buffer = grown
    buffer[torch.arange(len(buffer), device=buffer.device), :, slots.position] = new[:, :, 0]
    return buffer


class Block(nn.Module):
    """Pre-norm block: self-attention, cross-attention (decoder only), feed-forward."""

    def __init__(self, d_model: int, nheads: int, ff_size: int, dropout: float, cross: bool):
        super().__init__()
        self.self_norm, self.self_attention = nn.LayerNorm(d_model), Attention(d_model, nheads, dropout)
        self.cross_norm = nn.LayerNorm(d_model) if cross else None
        self.cross_attention = Attention(d_model, nheads, dropout) if cross else None
        self.ff = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, ff_size), nn.GELU(),
                                nn.Linear(ff_size, d_model), nn.Dropout(dropout))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, memory: Tensor | None = None, cache: list[KV] | None = None,
                slots: Slots | None = None) -> tuple[Tensor, list[KV]]:
        """``cache``: the block's cached (keys, values), self then cross; returns the new ones."""
        h = self.self_norm(x)
        y, kv = self.self_attention(h, h, cache[0] if cache else None, slots)
        x, new_cache = x + self.dropout(y), [kv]
        if self.cross_attention is not None:
            y, kv = self.cross_attention(self.cross_norm(x), memory, cache[1] if cache else None, slots)
            x, new_cache = x + self.dropout(y), [*new_cache, kv]
        return x + self.ff(x), new_cache


class Stack(nn.Module):
    """Blocks then a final layer norm; the cache is a flat dict ``{<name><block>.<k|v><0|1>}``."""

    def __init__(self, name: str, nb_layers: int, d_model: int, nheads: int, ff_size: int,
                 dropout: float, cross: bool = False):
        super().__init__()
        self.name, self.nb_attentions = name, 2 if cross else 1
        self.blocks = nn.ModuleList(Block(d_model, nheads, ff_size, dropout, cross) for _ in range(nb_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, memory: Tensor | None = None, state: State | None = None,
                slots: Slots | None = None) -> tuple[Tensor, State]:
        new_state: State = {}
        for i, block in enumerate(self.blocks):
            keys = [self._keys(i, j) for j in range(self.nb_attentions)]
            cache = [(state[k], state[v]) for k, v in keys] if state is not None else None
            x, kvs = block(x, memory, cache, slots)
            new_state.update({name: t for names, kv in zip(keys, kvs) for name, t in zip(names, kv)})
        return self.norm(x), new_state

    def empty_state(self, batch_size: int, nheads: int, d_model: int, device: torch.device | str) -> State:
        shape = (batch_size, nheads, INITIAL_CAPACITY, d_model // nheads)
        return {name: torch.zeros(shape, device=device)
                for i in range(len(self.blocks)) for j in range(self.nb_attentions) for name in self._keys(i, j)}

    def _keys(self, block: int, attention: int) -> tuple[str, str]:
        return f"{self.name}{block}.k{attention}", f"{self.name}{block}.v{attention}"


class DirectionTokens(nn.Module):
    """Embedded previous unit direction of each point; a learned start token at the first point."""

    def __init__(self, size: int):
        super().__init__()
        self.embedding = nn.Linear(3, size)
        self.start = nn.Parameter(torch.randn(size) * 0.02)

    def forward(self, previous_dirs: Tensor, first: Tensor) -> Tensor:
        """``previous_dirs`` ``(N, 3)`` (ignored where ``first`` ``(N,)`` is true)."""
        tokens = self.embedding(F.normalize(previous_dirs, dim=-1))
        return torch.where(first[:, None], self.start, tokens)


def check_sizes(d_model: int, nheads: int) -> None:
    """A one-line error unless ``d_model`` is even and split evenly between the attention heads."""
    if d_model % nheads or d_model % 2:
        raise DwimlError(f"model.d_model ({d_model}) must be even and a multiple of model.nheads ({nheads})")


class Transformer(nn.Module):
    """A causal Transformer and a direction head; see the module docstring for ``variant``."""

    def __init__(self, input_size: int, head: Callable[[int], nn.Module], variant: str,
                 d_model: int = 64, nheads: int = 4, nb_layers: int = 2, nb_decoder_layers: int | None = None,
                 ff_size: int = 128, dropout: float = 0.1, direction_embedding_size: int = 16,
                 input_embedding: Callable[[int], nn.Module] = IdentityEmbedding):
        super().__init__()
        if variant not in VARIANTS:
            raise DwimlError(f"model.variant must be one of {list(VARIANTS)}, got '{variant}'")
        check_sizes(d_model, nheads)
        self.variant, self.d_model, self.nheads = variant, d_model, nheads
        self.input_embedding = input_embedding(input_size)
        src_size = self.input_embedding.out_size
        if variant == "encoder_with_directions":
            self.tokens = DirectionTokens(direction_embedding_size)
            src_size += direction_embedding_size
        elif variant == "encoder_decoder":
            self.tokens = DirectionTokens(d_model)
        self.src_projection = nn.Linear(src_size, d_model)
        self.dropout = nn.Dropout(dropout)
        self.encoder = Stack("encoder", nb_layers, d_model, nheads, ff_size, dropout)
        self.decoder = Stack("decoder", nb_decoder_layers or nb_layers, d_model, nheads, ff_size, dropout,
                             cross=True) if variant == "encoder_decoder" else None
        self.head = head(d_model)

    def forward(self, inputs: Tensor, lengths: Tensor, directions: Tensor | None = None) -> Tensor:
        """Head outputs at every point: ``inputs`` ``(N, F)`` packed, ``lengths`` ``(B,)``;
        ``directions`` ``(N, 3)``: the segment leaving each point (unused by ``encoder``).

        The packed rows are padded once to ``(B, T, .)``; padding comes after every real point,
        so the causal mask alone keeps it out of the real points' attention.
        """
        streamline, local = point_streamline_ids(lengths), point_local_ids(lengths)
        tokens = None
        if self.variant != "encoder":
            rows = torch.arange(len(inputs), device=inputs.device)
            tokens = self.tokens(directions[(rows - 1).clamp_min(0)], local == 0)
        shape = (len(lengths), int(lengths.max()))
        src = _padded(self.input_embedding(inputs), streamline, local, shape)
        positions = torch.arange(shape[1], device=inputs.device)
        x, _ = self._layers(src, None if tokens is None else _padded(tokens, streamline, local, shape), positions)
        return self.head(x[streamline, local])

    @contextmanager
    def recording_attention(self) -> Iterator[dict[str, list[Tensor]]]:
        """Within the block, every attention computes its weights explicitly (not the fused kernel;
        the same outputs) and appends them, ``(B, heads, queries, keys)`` per call, to the yielded
        dict's list named ``<stack><block>.self`` or ``<stack><block>.cross`` (e.g. ``decoder0.cross``).
        In a forward pass, the rows are the streamlines and the queries and keys their points (padded:
        row ``b`` is valid up to its length); query ``i`` sees keys ``0..i``."""
        if self.training:
            raise DwimlError("attention weights are recorded in evaluation mode only (call model.eval())")
        attentions = {f"{stack.name}{i}.{kind}": getattr(block, f"{kind}_attention")
                      for stack in (self.encoder, self.decoder) if stack is not None
                      for i, block in enumerate(stack.blocks) for kind in ("self", "cross")
                      if getattr(block, f"{kind}_attention") is not None}
        for attention in attentions.values():
            attention.recorded = []
        try:
            yield {name: attention.recorded for name, attention in attentions.items()}
        finally:
            for attention in attentions.values():
                attention.recorded = None

    def compute_loss(self, outputs: Tensor, target_dirs: Tensor,
                     eos_targets: Tensor | None = None) -> tuple[Tensor, int]:
        """Mean loss over points, and the number of points."""
        return head_loss(self.head, outputs, target_dirs, eos_targets)

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        """``position`` ``(B,)`` (the number of points each row has seen) and empty key/value caches
        ``(B, heads, capacity, d_model / heads)``. Tracking steps update the caches in place."""
        stacks = [self.encoder] if self.decoder is None else [self.encoder, self.decoder]
        caches = {k: v for s in stacks for k, v in s.empty_state(batch_size, self.nheads, self.d_model, device).items()}
        return {"position": torch.zeros(batch_size, dtype=torch.long, device=device), **caches}

    def track_step(self, inputs: Tensor, last_dirs: Tensor, state: State) -> tuple[Tensor, State]:
        """One point per streamline at its own position, attending to the cached keys and values
        of its earlier points."""
        position = state["position"]
        tokens = None
        if self.variant != "encoder":
            tokens = self.tokens(last_dirs, position == 0)[:, None]
        src = self.input_embedding(inputs)[:, None]
        x, new_state = self._layers(src, tokens, position[:, None], state, Slots.at(position))
        return self.head(x[:, 0]), {**new_state, "position": position + 1}

    def _layers(self, src: Tensor, tokens: Tensor | None, positions: Tensor, state: State | None = None,
                slots: Slots | None = None) -> tuple[Tensor, State]:
        """Both stacks on ``(B, T, .)`` sequences at ``positions`` (``(T,)`` or ``(B, T)``)."""
        if self.variant == "encoder_with_directions":
            src = torch.cat([src, tokens], dim=-1)
        encoding = sinusoidal_positions(positions, self.d_model)
        memory, new_state = self.encoder(self.dropout(self.src_projection(src) + encoding), None, state, slots)
        if self.decoder is None:
            return memory, new_state
        x, decoder_state = self.decoder(self.dropout(tokens + encoding), memory, state, slots)
        return x, {**new_state, **decoder_state}


def _padded(x: Tensor, streamline: Tensor, local: Tensor, shape: tuple[int, int]) -> Tensor:
    """Packed rows ``(N, F)`` -> ``(B, T, F)``, zeros after each streamline's end."""
    out = x.new_zeros(*shape, x.shape[-1])
    out[streamline, local] = x
    return out
