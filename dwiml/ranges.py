"""The allowed values of settings, declared once beside each setting (a field of a config schema or of
:class:`~dwiml.tracking.tracker.TrackingOptions`, a command's option) and checked before any work:
a value outside its rule is a one-line error naming the key or option (``trainer.patience: -1 must be
>= 0``, ``--max-angle-deg: -10.0 must be in (0, 180]``). None (a null key, an option not given) is
always allowed: what it means is the setting's business."""
from __future__ import annotations

import dataclasses
import math
from argparse import Namespace
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING, ListConfig

from dwiml.errors import DwimlError

RULE = "rule"  # the metadata key of a dataclass field's rule


@dataclass(frozen=True)
class Range:
    """Numbers between ``low`` and ``high`` (bounds included unless open), and the words ``words``."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    words: tuple[str, ...] = ()

    def allows(self, value: Any) -> bool:
        if isinstance(value, str):
            return value in self.words
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below  # NaN: neither

    def __str__(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if self.high == math.inf:
            text = f"{'>' if self.low_open else '>='} {low}"
        elif self.low == -math.inf:
            text = f"{'<' if self.high_open else '<='} {high}"
        else:
            text = f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        return " or ".join([text, *(repr(word) for word in self.words)])


@dataclass(frozen=True)
class Choice:
    """One of ``values``."""

    values: tuple[str, ...]

    def allows(self, value: Any) -> bool:
        return value in self.values

    def __str__(self) -> str:
        return f"one of {', '.join(map(str, self.values))}"


Rule = Range | Choice
POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
AT_LEAST_ONE = Range(1)
FRACTION = Range(0, 1)                # a ratio, a probability that may be 0 or 1
PROBABILITY = Range(0, 1, True, True)  # strictly between 0 and 1
BELOW_ONE = Range(0, 1, high_open=True)  # a dropout, a decay
ANGLE_DEG = Range(0, 180, low_open=True)
EOS_THRESHOLD = Range(0, 1, True, True, words=("max",))  # see dwiml.tracking.eos
SEED = Range(0, 2**32 - 1)  # what numpy accepts


def ruled(rule: Rule, default: Any = MISSING) -> Any:
    """A dataclass field with its rule: ``lr: float = ruled(POSITIVE)`` (no value: the presets give it)."""
    return dataclasses.field(default=default, metadata={RULE: rule})


def rules_of(kind: type) -> dict[str, Rule]:
    """The rules of a dataclass's fields, by field name."""
    return {f.name: f.metadata[RULE] for f in dataclasses.fields(kind) if RULE in f.metadata}


def check(key: str, value: Any, rule: Rule) -> None:
    """A one-line error naming ``key`` when ``value`` (or an element of it, for a list) breaks ``rule``."""
    many = isinstance(value, (list, tuple, ListConfig))
    values = list(value) if many else [value]
    if any(v is not None and not rule.allows(v) for v in values):
        raise DwimlError(f"{key}: {values if many else repr(value) if isinstance(value, str) else value} "
                         f"must be {rule}")


def check_all(values: Mapping[str, Any], rules: Mapping[str, Rule], name: Callable[[str], str] = str) -> None:
    """:func:`check` each value of ``values`` that has a rule, naming it ``name(key)``."""
    for key, rule in rules.items():
        if key in values:
            check(name(key), values[key], rule)


def check_order(low_key: str, low: float | None, high_key: str, high: float | None) -> None:
    """A one-line error when both bounds are given and ``low > high``."""
    if low is not None and high is not None and low > high:
        raise DwimlError(f"{low_key}: {_number(low)} must be <= {high_key} ({_number(high)})")


def check_arguments(args: Namespace, rules: Mapping[str, Rule]) -> None:
    """:func:`check_all` on a command's parsed options, each named as typed (``--max-angle-deg``)."""
    check_all(vars(args), rules, option_name)


def _number(value: float) -> str:
    return str(int(value)) if math.isfinite(value) and float(value).is_integer() else f"{value:g}"


def option_name(dest: str) -> str:
    """The command-line spelling of an argparse destination: ``max_angle_deg`` -> ``--max-angle-deg``."""
    return "--" + dest.replace("_", "-")
