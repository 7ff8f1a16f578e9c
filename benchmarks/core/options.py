"""What every command-line tool of ntbench shares: the default cache folder, one-line argument errors and the
subject split's fractions."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

DEFAULT_CACHE = Path(os.environ.get("NTBENCH_CACHE", Path.home() / ".cache" / "ntbench"))


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr (``error: ...``) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see --help)\n")


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


class _SplitFractions(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None) -> None:
        try:
            setattr(namespace, self.dest, check_fractions(values))
        except ValueError as exc:
            parser.error(f"{option} {' '.join(map(str, values))}: {exc}")


def add_split_fractions(parser: argparse.ArgumentParser, default: str) -> None:
    """``--split-fractions TRAIN VAL TEST``, validated as it is parsed; ``default`` only names it in the help."""
    parser.add_argument(
        "--split-fractions",
        type=float,
        nargs=3,
        action=_SplitFractions,
        metavar=("TRAIN", "VAL", "TEST"),
        help=f"share of each group's subjects in train, val and test, summing to 1 (default: {default})",
    )
