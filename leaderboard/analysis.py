"""Compute every result of the leaderboard from the store rows (rendering lives elsewhere)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from leaderboard import stats
from leaderboard.blocks import (
    METRICS,
    SEED_GROUP,
    SETTING,
    STRATUM,
    block_means,
    paired_units,
    seeds_per_group,
    unit_table,
)
from leaderboard.errors import LeaderboardError
from leaderboard.store import provenance

COMPARISON_COLUMNS = [
    "method",
    "control",
    "scope",
    "n_blocks",
    "n_seeds",
    "mean_diff",
    "ci_low",
    "ci_high",
    "statistic",
    "p_value",
    "p_holm",
    "effect_size",
    "seeds_ok",
    "note",
]
NEGATIVE_COLUMNS = [
    "method",
    "scratch",
    "target_task",
    "transfer_type",
    *[c for c in COMPARISON_COLUMNS if c not in ("method", "control", "scope", "p_holm")],
    "verdict",
]


@dataclass(frozen=True)
class Options:
    """What to compare and how: resolved variant names, metric and test settings."""

    metric: str = "dice"
    alpha: float = 0.05
    control: str | None = "finetune"
    scratch: str | None = "scratch"
    few_shot: int | None = None
    n_boot: int = 2000
    bootstrap_seed: int = 0

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger value of the metric is better (Dice yes, HD95 no)."""
        return METRICS[self.metric]


@dataclass
class Report:
    """All computed results; tables and the page are rendered from this."""

    options: Options
    variants: list[str]
    n_blocks: int
    n_seeds: int
    max_seeds: int
    tasks: dict[str, str]
    overall: pd.DataFrame
    leaderboard: pd.DataFrame
    comparisons: pd.DataFrame
    negative_transfer: pd.DataFrame
    omnibus: dict
    gains: pd.DataFrame
    learning_curve: pd.DataFrame
    transferability: pd.DataFrame
    transferability_tau: pd.DataFrame
    provenance: dict
    settings: pd.DataFrame
    dropped_units: dict[str, int]
    without_results: list[str]


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


def compare(units: pd.DataFrame, method: str, reference: str, options: Options) -> dict:
    """Paired comparison ``method - reference`` on the units (index UNIT) where both have results."""
    paired = units[[method, reference]].dropna()
    blocks = block_means(paired)
    block_diff = blocks[method] - blocks[reference]
    unit_diff = (paired[method] - paired[reference]).reset_index(name="diff")
    low, high = stats.hierarchical_bootstrap_ci(
        unit_diff["diff"],
        unit_diff["seed"],
        unit_diff["subject_id"],
        unit_diff.groupby(STRATUM, observed=True).ngroup(),
        unit_diff.groupby(SEED_GROUP, observed=True).ngroup(),
        alpha=options.alpha,
        n_boot=options.n_boot,
        rng_seed=options.bootstrap_seed,
    )
    test = stats.wilcoxon_paired(blocks[method], blocks[reference])
    n_seeds = int(seeds_per_group(paired.index).min())
    too_small = stats.min_wilcoxon_p(test.n_nonzero) > options.alpha
    notes = []
    if too_small:
        notes.append(f"n too small: {test.n_nonzero} non-zero blocks cannot reach p<{options.alpha:g}")
    if n_seeds < stats.MIN_SEEDS:
        notes.append(f"{n_seeds} seed(s): cannot establish a difference")
    return {
        "n_blocks": len(blocks),
        "n_seeds": n_seeds,
        "mean_diff": float(block_diff.mean()),
        "ci_low": low,
        "ci_high": high,
        "statistic": test.statistic,
        "p_value": math.nan if too_small else test.p_value,
        "effect_size": stats.rank_biserial(block_diff),
        "seeds_ok": n_seeds >= stats.MIN_SEEDS,
        "note": "; ".join(notes),
    }


def _scopes(units: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    tasks = units.index.get_level_values("target_task")
    return [("all", units)] + [(task, units[tasks == task]) for task in sorted(tasks.unique())]


def comparisons_frame(common: pd.DataFrame, variants: list[str], options: Options) -> pd.DataFrame:
    """Every variant against the control, over all blocks and per target task, Holm per scope type."""
    control = options.control
    rows = [
        {"method": v, "control": control, "scope": scope} | compare(part, v, control, options)
        for scope, part in _scopes(common)
        for v in variants
        if v != control
    ]
    frame = pd.DataFrame(rows, columns=[c for c in COMPARISON_COLUMNS if c != "p_holm"])
    is_all = frame["scope"] == "all"
    frame["p_holm"] = np.nan
    for family in (is_all, ~is_all):
        p_values = frame.loc[family, "p_value"].to_numpy(dtype=float)
        frame.loc[family, "p_holm"] = stats.holm(p_values)
        m = int(np.count_nonzero(~np.isnan(p_values)))
        floor = m * stats.min_wilcoxon_p(int(frame.loc[family, "n_blocks"].max()))
        if m > 1 and floor > options.alpha:
            # The smallest Holm-adjusted p is m * p_(1) (Holm 1979): no row of this family can reach alpha.
            note = f"n too small for Holm over {m} (min p_holm {floor:.2g})"
            frame.loc[family, "note"] = (frame.loc[family, "note"] + "; " + note).str.lstrip("; ")
    return frame[COMPARISON_COLUMNS]


def negative_transfer_frame(units: pd.DataFrame, variants: list[str], options: Options) -> pd.DataFrame:
    """Every transfer variant against scratch per target task, with a verdict."""
    rows = []
    tasks = units.index.get_level_values("target_task")
    for variant in variants:
        if variant == options.scratch:
            continue
        for task in sorted(tasks.unique()):
            part = units[tasks == task][[variant, options.scratch]].dropna()
            if part.empty:
                continue
            result = compare(part, variant, options.scratch, options)
            kinds = "+".join(sorted(set(part.index.get_level_values("transfer_type"))))
            verdict = stats.verdict(result["ci_low"], result["ci_high"], result["n_seeds"], options.higher_is_better)
            rows.append(
                {"method": variant, "scratch": options.scratch, "target_task": task, "transfer_type": kinds}
                | result
                | {"verdict": verdict}
            )
    return pd.DataFrame(rows, columns=NEGATIVE_COLUMNS)


def _task_types(blocks: pd.DataFrame) -> dict[str, str]:
    frame = blocks.index.to_frame(index=False)
    return {
        task: "+".join(sorted(group["transfer_type"].unique()))
        for task, group in frame.groupby("target_task", sort=True)
    }


def _summaries(blocks: pd.DataFrame, ranks: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    values = blocks.rename_axis(columns="method").stack().rename("value")
    rank_values = ranks.rename_axis(columns="method").stack().rename("rank")
    long = pd.concat([values, rank_values], axis=1).reset_index()
    grouped = long.groupby(["method", *key], observed=True)
    return grouped.agg(
        n_blocks=("value", "size"),
        mean=("value", "mean"),
        std=("value", "std"),
        median=("value", "median"),
        mean_rank=("rank", "mean"),
    ).reset_index()


def omnibus(blocks: pd.DataFrame, ranks: pd.DataFrame, n_seeds: int, options: Options) -> dict:
    """Friedman chi-square, Iman-Davenport F and the Nemenyi CD over the common blocks."""
    n, k = blocks.shape
    result: dict = {
        "metric": options.metric,
        "alpha": options.alpha,
        "N": n,
        "k": k,
        "n_seeds": n_seeds,
        "mean_ranks": ranks.mean().round(6).to_dict(),
        "friedman_chi2": None,
        "friedman_p": None,
        "iman_davenport_F": None,
        "iman_davenport_p": None,
        "iman_davenport_df": None,
        "nemenyi_q_alpha": None,
        "nemenyi_cd": None,
        "note": "",
    }
    if k >= 2:
        result["nemenyi_q_alpha"] = stats.nemenyi_q(k, options.alpha)
        result["nemenyi_cd"] = stats.nemenyi_cd(k, n, options.alpha)
    if k < 3:
        result["note"] = f"k={k}: the Friedman test needs 3 or more methods; see comparisons.csv"
    elif n < 2:
        result["note"] = f"N={n}: the Friedman test needs 2 or more blocks"
    elif np.ptp(ranks.to_numpy(), axis=1).max() == 0:
        result["note"] = "all methods tie in every block: the Friedman test is undefined"
    else:
        chi2, p = sps.friedmanchisquare(*blocks.to_numpy().T)
        f, p_f = stats.iman_davenport(float(chi2), n, k)
        result |= {
            "friedman_chi2": float(chi2),
            "friedman_p": float(p),
            "iman_davenport_F": f,
            "iman_davenport_p": p_f,
            "iman_davenport_df": [k - 1, (k - 1) * (n - 1)],
        }
    if n_seeds < stats.MIN_SEEDS:
        result["note"] = (result["note"] + f"; {n_seeds} seed(s): cannot establish a difference").lstrip("; ")
    return result


def gains_frame(blocks: pd.DataFrame, variants: list[str], control: str) -> pd.DataFrame:
    """Per-block difference of each variant to the control (long: method, target_task, diff)."""
    diffs = blocks[[v for v in variants if v != control]].sub(blocks[control], axis=0)
    long = diffs.rename_axis(columns="method").stack().rename("diff").reset_index()
    return long[["method", "target_task", "diff"]]


def learning_curve_frame(units: pd.DataFrame, options: Options) -> pd.DataFrame:
    """Mean metric per (variant, few_shot) on the blocks all variants share at that K, with a CI."""
    rows = []
    shots = units.index.get_level_values("few_shot")
    for k_shot in sorted(shots.unique()):
        part = units[shots == k_shot].dropna(axis=1, how="all")
        common = paired_units(part, list(part.columns))
        if common.empty:
            continue
        frame = common.reset_index()
        strata = frame.groupby(STRATUM, observed=True).ngroup()
        groups = frame.groupby(SEED_GROUP, observed=True).ngroup()
        n_seeds = int(seeds_per_group(common.index).min())
        n_blocks = len(block_means(common))
        for variant in common.columns:
            low, high = stats.hierarchical_bootstrap_ci(
                frame[variant],
                frame["seed"],
                frame["subject_id"],
                strata,
                groups,
                alpha=options.alpha,
                n_boot=options.n_boot,
                rng_seed=options.bootstrap_seed,
            )
            mean = float(block_means(common[[variant]])[variant].mean())
            rows.append(
                {
                    "method": variant,
                    "few_shot": int(k_shot),
                    "n_blocks": n_blocks,
                    "n_seeds": n_seeds,
                    "mean": mean,
                    "ci_low": low,
                    "ci_high": high,
                }
            )
    return pd.DataFrame(rows)


def transferability_frames(
    df: pd.DataFrame, units: pd.DataFrame, options: Options
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per transfer: mean LEEP/NCE and the control's gain over scratch; Kendall tau between them."""
    ok = df[(df["status"] == "ok") & (df["variant"] != options.scratch)]
    scores = ok.groupby([*STRATUM, "seed"], observed=True)[["leep", "nce"]].mean().dropna(how="all")
    if scores.empty or options.control not in units or options.scratch not in units:
        return pd.DataFrame(), pd.DataFrame()
    paired = units[[options.control, options.scratch]].dropna()
    sign = 1.0 if options.higher_is_better else -1.0
    gain = sign * (paired[options.control] - paired[options.scratch])
    per_seed = scores.join(gain.groupby(level=[*STRATUM, "seed"]).mean().rename("gain"), how="inner")
    rows = []
    for key, group in per_seed.groupby(level=STRATUM, observed=True):
        stratum = paired.xs(key, level=STRATUM, drop_level=False)
        result = compare(stratum, options.control, options.scratch, options)
        rows.append(
            dict(zip(STRATUM, key))
            | {
                "n_blocks": result["n_blocks"],
                "n_seeds": len(group),
                "leep": group["leep"].mean(),
                "nce": group["nce"].mean(),
                "gain": group["gain"].mean(),
                "verdict": stats.verdict(
                    result["ci_low"], result["ci_high"], result["n_seeds"], options.higher_is_better
                ),
            }
        )
    per_transfer = pd.DataFrame(rows)
    taus = [
        _kendall(level, score, frame[score], frame["gain"], options.alpha)
        for level, frame in (("transfer", per_transfer), ("transfer × seed", per_seed))
        for score in ("leep", "nce")
    ]
    return per_transfer, pd.DataFrame(taus)


def _kendall(level: str, score: str, x: pd.Series, y: pd.Series, alpha: float) -> dict:
    valid = x.notna() & y.notna()
    n = int(valid.sum())
    row = {"level": level, "score": score, "n": n, "tau": math.nan, "p_value": math.nan, "note": ""}
    if n < 2:
        return row | {"note": "fewer than 2 transfers with a score"}
    result = sps.kendalltau(x[valid], y[valid])
    row |= {"tau": float(result.statistic), "p_value": float(result.pvalue)}
    if stats.min_kendall_p(n) > alpha:
        row |= {"p_value": math.nan, "note": f"n too small: {n} points cannot reach p<{alpha:g}"}
    return row


def analyse(df: pd.DataFrame, options: Options) -> Report:
    """Build every table and figure input from the store rows (controls already resolved)."""
    all_units = unit_table(df, options.metric, options.scratch)
    units = all_units
    if options.few_shot is not None:
        units = all_units[all_units.index.get_level_values("few_shot") == options.few_shot]
    units = units.dropna(axis=1, how="all")
    variants = sorted(units.columns)
    if not variants:
        raise LeaderboardError("--results: no successful result for the chosen region/few-shot")
    common = paired_units(units, variants)
    if common.empty:
        counts = ", ".join(f"{v}={units[v].notna().sum()}" for v in variants)
        raise LeaderboardError(f"--results: no result unit is shared by all methods (units: {counts})")
    blocks = block_means(common)
    ranks = pd.DataFrame(
        stats.block_ranks(blocks.to_numpy(), options.higher_is_better), index=blocks.index, columns=variants
    )
    overall = _summaries(blocks, ranks, []).set_index("method").sort_values(["mean_rank", "method"])
    variants = list(overall.index)
    seed_counts = seeds_per_group(common.index)
    n_seeds = int(seed_counts.min())
    leaderboard = _summaries(blocks, ranks, ["target_task"])
    types = _task_types(blocks)
    leaderboard.insert(2, "transfer_type", leaderboard["target_task"].map(types))
    leaderboard["order"] = leaderboard["method"].map(variants.index)
    leaderboard = leaderboard.sort_values(["target_task", "order"]).drop(columns="order")
    has_control = options.control in variants and len(variants) > 1
    has_scratch = options.scratch in variants and len(variants) > 1
    empty = pd.DataFrame()
    curve_units = all_units if all_units.index.get_level_values("few_shot").nunique() > 1 else None
    transfer, taus = transferability_frames(df, units, options) if has_control else (empty, empty)
    return Report(
        options=options,
        variants=variants,
        n_blocks=len(blocks),
        n_seeds=n_seeds,
        max_seeds=int(seed_counts.max()),
        tasks=types,
        overall=overall,
        leaderboard=leaderboard.reset_index(drop=True),
        comparisons=comparisons_frame(common, variants, options)
        if has_control
        else pd.DataFrame(columns=COMPARISON_COLUMNS),
        negative_transfer=negative_transfer_frame(units, variants, options)
        if has_scratch
        else pd.DataFrame(columns=NEGATIVE_COLUMNS),
        omnibus=omnibus(blocks, ranks, n_seeds, options),
        gains=gains_frame(blocks, variants, options.control) if has_control else empty,
        learning_curve=learning_curve_frame(curve_units, options) if curve_units is not None else empty,
        transferability=transfer,
        transferability_tau=taus,
        provenance=provenance(df, options.scratch),
        settings=blocks.index.to_frame(index=False)[SETTING].drop_duplicates().reset_index(drop=True),
        dropped_units={v: int(units[v].notna().sum() - len(common)) for v in variants},
        without_results=sorted(set(df["variant"]) - set(variants)),
    )
