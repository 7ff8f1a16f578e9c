"""What every command-line tool of ntbench shares: the default cache folder, one-line argument errors, the
option checks that need no data, the ``--split-fractions`` option and the verdicts' equivalence margin."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from datasets.core.fractions import check_fractions

DEFAULT_CACHE = Path(os.environ.get("NTBENCH_CACHE", Path.home() / ".cache" / "ntbench"))


class UsageError(ValueError):
    """A command-line option is invalid."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr (``error: ...``) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see --help)\n")


def flag(dest: str) -> str:
    """argparse dest -> its command-line spelling (``few_shot`` -> ``--few-shot``)."""
    return "--" + dest.replace("_", "-")


def check_minimums(args: argparse.Namespace, minimum: Mapping[str, int | float]) -> None:
    """Each numeric option named in ``minimum`` (argparse dest -> smallest allowed value), list options element-wise;
    ``UsageError`` on the first one below."""
    for dest, low in minimum.items():
        value = getattr(args, dest, None)
        for v in value if isinstance(value, list) else [value]:
            if v is not None and v < low:
                raise UsageError(f"{flag(dest)} {v}: must be >= {low}")


def check_folder(option: str, folder: Path) -> None:
    """Fail early if ``folder`` cannot be created or written, without creating anything."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{option} {folder}: exists and is not a folder")
    parent = next(p for p in [folder, *folder.resolve().parents] if p.exists())
    if not parent.is_dir():
        raise UsageError(f"{option} {folder}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {folder}: not writable ({parent} is read-only)")


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


# Practical-equivalence margin of the verdicts, in Dice (docs/statistics.md, "Equivalence"): the difference
# the leaderboard's power table is sized for (--power-delta 0.02), so that a difference the benchmark sets out
# to detect is never at the same time called negligible; about twice the typical seed-to-seed SD (0.010) of one
# method's mean Dice on the mni152 runs (docs/trm-study.md).
DEFAULT_MARGIN = 0.02
MARGIN_HELP = (
    f"practical-equivalence margin of the verdicts, in Dice (default {DEFAULT_MARGIN:g}: the difference the power "
    "table is sized for, about twice one method's typical seed-to-seed SD on the mni152 runs; docs/statistics.md). "
    "Verdict 'equivalent': no significant difference and the (1 - 2 alpha) interval, 90%% at alpha 0.05, within "
    "+-margin (two one-sided tests, Holm-adjusted like the p-values); never for HD95"
)


def positive_margin(text: str) -> float:
    """``--margin`` as a number in (0, 1), a Dice difference; else ``argparse.ArgumentTypeError`` (one line, exit 2)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:  # NaN fails too
        raise argparse.ArgumentTypeError(f"{text!r}: must be a number > 0 and < 1 (Dice, e.g. {DEFAULT_MARGIN:g})")
    return value


def add_margin(parser: argparse.ArgumentParser) -> None:
    """``--margin DICE``, validated as it is parsed (before anything heavy is imported or written)."""
    parser.add_argument("--margin", type=positive_margin, default=DEFAULT_MARGIN, metavar="DICE", help=MARGIN_HELP)
