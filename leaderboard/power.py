"""``python -m leaderboard.power --results R --control finetune --delta 0.02``: seeds (and subjects) for 80% power.

Estimates the variance components of each method's paired difference to the control from a pilot
store (crossed seed x subject model, ``stats.variance_components``) and finds the fewest seeds that
detect a true mean difference of ``--delta`` with the wanted power, for the pilot's number of test
subjects and for larger test sets.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.core.options import OneLineParser
from leaderboard import stats
from leaderboard.comparisons import prepared, resolve_variant
from leaderboard.errors import LeaderboardError
from leaderboard.settings import select
from leaderboard.store import load_store
from leaderboard.units import METRICS, grids, wide_table

PROG = "python -m leaderboard.power"
MAX_SEEDS = 50
SUBJECT_CHOICES = (10, 20, 50)


def seeds_needed(components: dict, delta: float, n_subjects: int, alpha: float, target: float) -> float:
    """The fewest seeds (2..MAX_SEEDS) giving ``target`` power, or NaN when none does."""
    for n_seeds in range(2, MAX_SEEDS + 1):
        if stats.power(components, delta, n_seeds, n_subjects, alpha) >= target:
            return float(n_seeds)
    return math.nan


def power_table(
    frame: pd.DataFrame,
    control: str,
    delta: float,
    *,
    metric: str = "dice",
    scratch: str | None = "scratch",
    alpha: float = 0.05,
    target: float = 0.8,
) -> pd.DataFrame:
    """Per (setting, method): pilot seeds and subjects, variance components (as SDs) and seeds needed."""
    rows_in = prepared(frame, scratch)
    variants = sorted(rows_in.loc[rows_in["status"] == "ok", "variant"].unique())
    control = resolve_variant(control, variants, "--control")
    rows = []
    for setting, part in rows_in.groupby("setting", sort=True):
        wide = wide_table(part, metric, scratch)
        if control not in wide.columns:
            continue
        for method in [v for v in wide.columns if v != control]:
            g = grids(wide, [method, control])
            if g.n_seeds < 2 or g.n_units < 2:
                continue
            diff = (g.values[method] - g.values[control]).to_numpy()
            components = stats.variance_components(*stats.mean_squares(diff), g.n_seeds, g.n_units)
            subjects = sorted({g.n_units, *(n for n in SUBJECT_CHOICES if n > g.n_units)})
            rows.append(
                {
                    "setting": setting,
                    "method": method,
                    "control": control,
                    "pilot_seeds": g.n_seeds,
                    "pilot_units": g.n_units,
                    "sd_seed": math.sqrt(components["seed"]),
                    "sd_subject": math.sqrt(components["subject"]),
                    "sd_resid": math.sqrt(components["resid"]),
                    "power_now": stats.power(components, delta, g.n_seeds, g.n_units, alpha),
                }
                | {f"seeds@{n}": seeds_needed(components, delta, n, alpha, target) for n in subjects}
            )
    return pd.DataFrame(rows)


def format_table(table: pd.DataFrame, delta: float, target: float) -> str:
    """Plain-text report of ``power_table``."""
    if table.empty:
        return "no setting has at least 2 seeds and 2 test subjects for method and control: nothing to estimate"
    lines = [
        f"seeds needed for {target:.0%} power to detect a mean difference of {delta:g} (— = more than {MAX_SEEDS})"
    ]
    for r in table.to_dict("records"):
        needed = ", ".join(
            f"{k.split('@')[1]} subjects: {'—' if np.isnan(v) else int(v)}"
            for k, v in r.items()
            if k.startswith("seeds@")
        )
        lines.append(
            f"{r['setting']} | {r['method']} vs {r['control']}: pilot {r['pilot_seeds']} seeds x {r['pilot_units']} "
            f"subjects, SD seed {r['sd_seed']:.4f}, subject {r['sd_subject']:.4f}, residual {r['sd_resid']:.4f}, "
            f"power now {r['power_now']:.2f}; {needed}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the command; bad input gives a one-line error and exit status 2."""
    p = OneLineParser(prog=PROG, description=__doc__)
    p.add_argument("--results", type=Path, required=True, help="pilot results folder (all *.parquet under it)")
    p.add_argument("--control", default="finetune", help="method the others are compared with (default: finetune)")
    p.add_argument("--delta", type=float, required=True, help="smallest mean difference worth detecting")
    p.add_argument("--metric", choices=sorted(METRICS), default="dice")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--power", type=float, default=0.8, help="wanted power (default 0.8)")
    p.add_argument("--scratch", default="scratch", help="no-transfer method, paired with every transfer")
    p.add_argument("--suite", action="append", help="only the settings this suite ran (repeatable)")
    p.add_argument("--dataset", action="append", help="only this dataset (repeatable)")
    args = p.parse_args(argv)
    try:
        if not args.delta > 0 or not 0 < args.alpha < 1 or not 0 < args.power < 1:
            raise LeaderboardError("--delta must be > 0, --alpha and --power in (0, 1)")
        frame = select(load_store(args.results), suites=args.suite, datasets=args.dataset)
        table = power_table(
            frame,
            args.control,
            args.delta,
            metric=args.metric,
            scratch=args.scratch,
            alpha=args.alpha,
            target=args.power,
        )
    except LeaderboardError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(table, args.delta, args.power))
    return 0


if __name__ == "__main__":
    sys.exit(main())
