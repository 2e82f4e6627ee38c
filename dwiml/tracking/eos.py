"""The end-of-streamline (EOS) stop of tracking, from a head's EOS output.

Two rules (``TrackingOptions.eos_threshold``):

- a probability ``p``: stop where the EOS probability exceeds ``p``;
- ``"max"`` (classification heads only, as dwi_ml's ``max``): stop where ending is the most
  probable outcome. The head gives ``P(end) = s`` (its EOS output) and, if it goes on, one
  probability per sphere vertex ``q_v`` (softmax of the direction logits); over the outcomes
  "end" and "go on along vertex v" (probabilities ``s`` and ``(1 - s) q_v``), "end" is the most
  probable when ``s > (1 - s) max_v q_v``. The rule does not depend on the direction drawn,
  so deterministic and probabilistic tracking stop at the same points for the same outputs.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from dwiml.errors import DwimlError
from dwiml.models.heads import SphereClassification

EosRule = float | str | None


def check_head(head: nn.Module, rule: EosRule) -> None:
    """A one-line error when ``head`` cannot apply ``rule``."""
    if rule is None:
        return
    if not getattr(head, "has_eos", False):
        raise DwimlError("eos_threshold given, but the model's head has no end-of-streamline output")
    if rule == "max" and not isinstance(head, SphereClassification):
        raise DwimlError(f"eos_threshold 'max' compares ending with the most probable direction class: it needs a "
                         f"classification head, not {type(head).__name__}")


def eos_stops(head: nn.Module, outputs: Tensor, rule: EosRule) -> Tensor:
    """``(N,)``: True where the rule ends the streamline at this point."""
    if rule is None:
        return torch.zeros(len(outputs), dtype=torch.bool, device=outputs.device)
    ending = head.eos_probability(outputs)
    if rule == "max":
        best_class = torch.softmax(head.params(outputs), dim=-1).amax(dim=-1)
        return ending > (1 - ending) * best_class
    return ending > rule
