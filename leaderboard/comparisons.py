"""``compare``: every method against a control, per setting and scope, from one crossed random-effects model."""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks.core.options import DEFAULT_MARGIN
from leaderboard import stats
from leaderboard.errors import LeaderboardError
from leaderboard.settings import assign_settings, is_smoke
from leaderboard.units import METRICS, grids, scope_rows, scopes, wide_table

COLUMNS = [
    "setting",
    "scope",
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

    ``frame`` is ``load_store``'s output (optionally filtered with ``settings.select``). The unit is a
    test subject (its regions, transfers and target tasks in the scope averaged within each seed);
    method and control are paired on (subject, seed) and the interval and p-value come from the
    crossed (seed x subject) random-effects model of ``stats.crossed_interval``. Holm runs over all
    rows, for the difference p and, separately, for the TOST p of equivalence within +-``margin``
    (Dice; ``stats.tost``). Verdict: ``worse``/``better`` (``negative``/``positive`` when the control
    is scratch) when the Holm p < alpha with at least 3 seeds; else ``equivalent`` when the Holm TOST
    p < alpha with at least 3 seeds; else ``inconclusive``. No equivalence for HD95 (the margin is a
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
        tasks = wide.index.get_level_values("target_task")
        for scope in scopes(wide):
            units = scope_rows(wide, scope)
            for method in [v for v in wide.columns if v != control]:
                if scope == "all" and len(scopes(wide)) > 1 and not _everywhere(wide, tasks, [method, control]):
                    continue  # not pooled over all target tasks when the pair lacks one: its task rows say it all
                out.append(
                    {"setting": setting, "scope": scope, "method": method, "control": control}
                    | pair_result(units, method, control, alpha, types, margin)
                )
    late = ("p_holm", "verdict", "p_tost_holm")
    result = pd.DataFrame(out, columns=[c for c in COLUMNS + EXTRA_COLUMNS if c not in late])
    result = result[result["n_units"] > 0].reset_index(drop=True)
    result["p_holm"] = stats.holm(result["p_value"].to_numpy(dtype=float))
    # Equivalence claims are a family of their own, Holm over the same rows (docs/statistics.md, "Equivalence").
    result["p_tost_holm"] = stats.holm(result["p_tost"].to_numpy(dtype=float))
    mean, p, p_eq = (result[c].to_numpy(dtype=float) for c in ("mean_diff", "p_holm", "p_tost_holm"))
    result["verdict"] = stats.verdicts(mean, p, result["n_seeds"].to_numpy(dtype=float), alpha, higher, words, p_eq)
    return result[COLUMNS + EXTRA_COLUMNS]


def _everywhere(wide: pd.DataFrame, tasks: pd.Index, variants: list[str]) -> bool:
    """Whether every variant has a result on every target task of the setting."""
    return all(wide.loc[tasks == t, v].notna().any() for t in tasks.unique() for v in variants)


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
