"""``compare``: every method against a control, per setting and scope, from one crossed random-effects model."""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks.core.options import DEFAULT_MARGIN
from leaderboard import stats
from leaderboard.errors import LeaderboardError
from leaderboard.settings import assign_settings, is_smoke
from leaderboard.units import LEVELS, METRICS, comparison_scopes, covering, grids, scope_rows, wide_table

COLUMNS = [
    "setting",
    "scope",
    "level",
    "method",
    "control",
    "n_units",
    "n_seeds",
    "mean_diff",
    "ci_low",
    "ci_high",
    "p_value",
    "p_holm",
    "verdict",
]
# Equivalence (TOST, docs/statistics.md): the margin (NaN for HD95 or when off), the (1 - 2 alpha) interval,
# the TOST p and its Holm adjustment over the same rows as p_holm.
TOST_COLUMNS = ["margin", "tost_low", "tost_high", "p_tost", "p_tost_holm"]
EXTRA_COLUMNS = [*TOST_COLUMNS, "df", "transfer_type", "note"]
# The Holm family, defined here once for the page, the CSVs and the run summary (docs/statistics.md, "Multiplicity").
HOLM_FAMILY = (
    "Holm families: the per-transfer rows of one setting and one control are one family, the pooled rows (a target "
    f"task's transfers, all target tasks) of that setting and control another; rows with fewer than {stats.MIN_SEEDS} "
    "seeds can have no verdict and are in none; the TOST p-values of the same rows form families of their own. The "
    "run summary's verdicts are the per-transfer rows."
)


def resolve_variant(name: str, variants: list[str], option: str) -> str:
    """The variant called ``name``, or the only variant of method ``name``; else a LeaderboardError."""
    if name in variants:
        return name
    matches = [v for v in variants if v.split("(", 1)[0] == name]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise LeaderboardError(f"{option} {name}: ambiguous, pick one of {', '.join(matches)}")
    raise LeaderboardError(f"{option} {name}: unknown method (store has {', '.join(variants)})")


def prepared(frame: pd.DataFrame, scratch: str | None, include_smoke: bool = False) -> pd.DataFrame:
    """Test-split, non-trial rows (smoke runs out unless asked) with their ``setting`` label."""
    rows = frame
    if "setting" not in rows.columns:
        rows = rows[(rows["split"] == "test") & (rows["trial"] < 0)]
        if not include_smoke:
            rows = rows[~is_smoke(rows)]
        rows = assign_settings(rows, scratch)
    return rows


def compare(
    frame: pd.DataFrame,
    control: str,
    *,
    metric: str = "dice",
    scratch: str | None = "scratch",
    alpha: float = 0.05,
    seed: int = 0,
    include_smoke: bool = False,
    margin: float | None = DEFAULT_MARGIN,
) -> pd.DataFrame:
    """One row per (setting, scope, method): method - control, interval, p, Holm p, TOST and verdict.

    ``frame`` is ``load_store``'s output (optionally filtered with ``settings.select``). Scopes
    (``units.comparison_scopes``): each transfer, then pooled rows for a target task with several transfers
    and for all target tasks. The unit is a test subject (its regions, transfers and target tasks in the
    scope averaged within each seed); method and control are paired on (subject, seed) and the interval
    and p-value come from the crossed (seed x subject) random-effects model of ``stats.crossed_interval``.
    Holm runs within each family of ``HOLM_FAMILY`` (``holm_by_family``), for the difference p and,
    separately, for the TOST p of equivalence within +-``margin`` (Dice; ``stats.tost``). Verdict:
    ``worse``/``better`` (``negative``/``positive`` when the control is scratch) when the Holm p < alpha
    with at least 3 seeds; else ``equivalent`` when the Holm TOST p < alpha with at least 3 seeds; else
    ``inconclusive``. No equivalence for HD95 (the margin is a
    Dice difference) or with ``margin=None``. ``seed`` is accepted for API stability: the analytic
    interval draws no random numbers.
    """
    del seed
    if metric not in METRICS:
        raise LeaderboardError(f"--metric {metric}: unknown (use {', '.join(METRICS)})")
    if margin is not None and not 0 < margin < 1:
        raise LeaderboardError(f"--margin {margin:g}: must be > 0 and < 1 (a Dice difference)")
    margin = margin if metric == "dice" else None
    rows = prepared(frame, scratch, include_smoke)
    variants = sorted(rows.loc[rows["status"] == "ok", "variant"].unique())
    control = resolve_variant(control, variants, "--control")
    higher = METRICS[metric]
    words = ("negative", "positive") if control == scratch else ("worse", "better")
    out = []
    for setting, part in rows.groupby("setting", sort=True):
        wide = wide_table(part, metric, scratch)
        if control not in wide.columns:
            continue
        types = part.drop_duplicates("transfer").set_index("transfer")["transfer_type"]
        for scope in comparison_scopes(wide):
            units = scope_rows(wide, scope)
            for method in [v for v in wide.columns if v != control]:
                if scope.level != "transfer" and len(covering(units, scope, [method, control])) < 2:
                    continue  # a pooled row pools every transfer of its scope; else the transfer rows say it all
                where = {"setting": setting, "scope": scope.name, "level": scope.level}
                out.append(
                    where
                    | {"method": method, "control": control}
                    | pair_result(units, method, control, alpha, types, margin)
                )
    late = ("p_holm", "verdict", "p_tost_holm")
    result = pd.DataFrame(out, columns=[c for c in COLUMNS + EXTRA_COLUMNS if c not in late])
    result = result[result["n_units"] > 0]
    # Each family's rows together, per-transfer rows first (a stable sort keeps the scopes' order).
    result = result.sort_values(["setting", "level"], key=_level_order, kind="stable").reset_index(drop=True)
    result["p_holm"] = holm_by_family(result, "p_value")
    # Equivalence claims are families of their own over the same rows (docs/statistics.md, "Equivalence").
    result["p_tost_holm"] = holm_by_family(result, "p_tost")
    mean, p, p_eq = (result[c].to_numpy(dtype=float) for c in ("mean_diff", "p_holm", "p_tost_holm"))
    result["verdict"] = stats.verdicts(mean, p, result["n_seeds"].to_numpy(dtype=float), alpha, higher, words, p_eq)
    return result[COLUMNS + EXTRA_COLUMNS]


def _level_order(column: pd.Series) -> pd.Series:
    return column.map(LEVELS.index) if column.name == "level" else column


def holm_by_family(result: pd.DataFrame, column: str) -> np.ndarray:
    """Holm-adjusted ``column`` within each family (``HOLM_FAMILY``): setting, control, per-transfer or pooled.

    Rows with fewer than ``stats.MIN_SEEDS`` seeds are in no family (NaN): their verdict is inconclusive anyway.
    """
    p = result[column].to_numpy(dtype=float).copy()
    p[result["n_seeds"].to_numpy() < stats.MIN_SEEDS] = np.nan
    adjusted = np.full_like(p, np.nan)
    family = result.groupby(["setting", "control", result["level"] == "transfer"], sort=False).indices
    for index in family.values():
        adjusted[index] = stats.holm(p[index])
    return adjusted


def pair_result(
    units: pd.DataFrame, method: str, control: str, alpha: float, types: pd.Series, margin: float | None = None
) -> dict:
    """The crossed-model comparison of two variants on the units both have; TOST within +-``margin`` if given."""
    g = grids(units, [method, control])
    row = {"n_units": g.n_units, "n_seeds": g.n_seeds, "margin": np.nan if margin is None else margin}
    row |= dict.fromkeys(("tost_low", "tost_high", "p_tost"), np.nan)
    if not g.values:
        return row | {
            "mean_diff": np.nan,
            "ci_low": np.nan,
            "ci_high": np.nan,
            "p_value": np.nan,
            "df": np.nan,
            "transfer_type": "",
            "note": "no shared units",
        }
    diff = (g.values[method] - g.values[control]).to_numpy()
    est = stats.crossed_interval(diff, alpha)
    if margin is not None:
        eq = stats.tost(est, margin, alpha)
        row |= {"tost_low": float(eq.low), "tost_high": float(eq.high), "p_tost": float(eq.p_value)}
    paired = units[[method, control]].dropna()
    kinds = sorted({types.get(t, "none") for t in paired.index.get_level_values("transfer")} - {"none"})
    notes = [g.note()] if g.note() else []
    if g.n_units < 2:
        notes.append("1 test subject: the interval cannot generalise to new subjects")
    if g.n_seeds < 2:
        notes.append("1 seed: the interval cannot generalise to new seeds")
    elif g.n_seeds < stats.MIN_SEEDS:
        notes.append(f"{g.n_seeds} seeds: cannot establish a difference (at least {stats.MIN_SEEDS})")
    return row | {
        "mean_diff": float(est.mean),
        "ci_low": float(est.ci_low),
        "ci_high": float(est.ci_high),
        "p_value": float(est.p_value),
        "df": float(est.df),
        "transfer_type": ", ".join(kinds),
        "note": "; ".join(notes),
    }
