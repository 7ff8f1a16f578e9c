"""The subject split's fractions (train, val, test): their default, their check and the text the store records."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

DEFAULT_SPLIT_FRACTIONS = (0.6, 0.2, 0.2)  # train, val, test share of each group's subjects (datasets/splits.py)


def check_fractions(fractions: Any) -> tuple[float, float, float]:
    """``fractions`` as a (train, val, test) tuple of floats; ``ValueError`` unless three positive numbers sum to 1."""
    try:
        ok = isinstance(fractions, Sequence) and not isinstance(fractions, str)
        values = tuple(float(f) for f in fractions) if ok else ()
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or min(values) <= 0 or abs(sum(values) - 1) > 1e-6:
        raise ValueError("must be three positive numbers (train, val, test) summing to 1")
    return values  # type: ignore[return-value]


def fractions_text(fractions: Sequence[float]) -> str:
    """The fractions as the store and the nnU-Net export record them, e.g. ``"0.6 0.2 0.2"``."""
    return " ".join(f"{f:g}" for f in fractions)
