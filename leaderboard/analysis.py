"""Compute every result of the leaderboard from the store rows, one setting at a time (rendering lives elsewhere)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sps

from benchmarks.core.options import DEFAULT_MARGIN
from leaderboard import stats
from leaderboard.comparisons import COLUMNS, EXTRA_COLUMNS, compare, prepared
from leaderboard.errors import LeaderboardError
from leaderboard.power import power_table
from leaderboard.settings import left_out, setting_text
from leaderboard.store import provenance, score_columns
from leaderboard.units import METRICS, Scope, comparison_scopes, covering, grids, scope_rows, wide_table


@dataclass(frozen=True)
class Options:
    """What to compare and how: resolved variant names, metric and test settings."""

    metric: str = "dice"
    alpha: float = 0.05
    control: str | None = "finetune"
    scratch: str | None = "scratch"
    power_delta: float = 0.02
    margin: float = DEFAULT_MARGIN  # practical-equivalence margin in Dice (no equivalence for HD95)

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger value of the metric is better (Dice yes, HD95 no)."""
        return METRICS[self.metric]


@dataclass
class SettingReport:
    """One setting's tables: never pooled with another setting."""

    setting: str
    suites: list[str]
    variants: list[str]
    scopes: list[Scope]  # the comparisons' scopes (``units.comparison_scopes``), widest last
    types: dict[str, str]  # per scope: its transfer types
    summary: pd.DataFrame  # method, scope, level, n_units, n_seeds, mean, std, mean_rank
    omnibus: dict
    notes: list[str] = field(default_factory=list)


@dataclass
class Report:
    """All computed results; tables and the page are rendered from this."""

    options: Options
    settings: list[SettingReport]
    comparisons: pd.DataFrame
    negative_transfer: pd.DataFrame
    transferability: pd.DataFrame
    kendall: pd.DataFrame
    learning_curves: list[tuple[str, pd.DataFrame]]
    power: pd.DataFrame
    provenance: dict
    coverage: dict
    tuning: dict[str, str]
    notes: list[str]
    without_results: list[str]


def _summary(
    wide: pd.DataFrame, scopes: list[Scope], variants: list[str], higher: bool
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Per scope: mean and std over units (seeds averaged) of each variant on their common grid; the widest
    scope's units (subject x variant) for the omnibus test."""
    rows, widest = [], None
    for scope in scopes:
        part = scope_rows(wide, scope)
        # A pooled scope holds the variants run on every one of its transfers (the others: per transfer only).
        present = covering(part, scope, variants)
        g = grids(part, present)
        if not g.values:
            continue
        units = pd.DataFrame({v: g.values[v].mean(axis=0) for v in present})  # subject x variant
        ranks = pd.DataFrame(stats.block_ranks(units.to_numpy(), higher), index=units.index, columns=present)
        if scope == scopes[-1]:
            widest = units
        for v in present:
            rows.append(
                {
                    "method": v,
                    "scope": scope.name,
                    "level": scope.level,
                    "n_units": g.n_units,
                    "n_seeds": g.n_seeds,
                    "mean": float(units[v].mean()),
                    "std": float(units[v].std(ddof=1)) if len(units) > 1 else math.nan,
                    "mean_rank": float(ranks[v].mean()),
                }
            )
    return pd.DataFrame(rows), widest


def omnibus(units: pd.DataFrame | None, n_seeds: int, options: Options) -> dict:
    """Friedman chi-square and Iman-Davenport F over the independent units; the Nemenyi CD when it may be drawn.

    The same unit and seed rules as the verdicts: units are test subjects (seeds averaged) of the widest
    scope, and with fewer than ``stats.MIN_SEEDS`` seeds there is no test, only the mean ranks.
    """
    n, k = (0, 0) if units is None else units.shape
    result: dict = {
        "metric": options.metric,
        "alpha": options.alpha,
        "N": n,
        "k": k,
        "n_seeds": n_seeds,
        "mean_ranks": {},
        "friedman_chi2": None,
        "friedman_p": None,
        "iman_davenport_F": None,
        "iman_davenport_p": None,
        "iman_davenport_df": None,
        "nemenyi_q_alpha": None,
        "nemenyi_cd": None,
        "draw_cd": False,
        "note": "",
    }
    if units is None:
        result["note"] = "no unit is shared by all methods"
        return result
    ranks = stats.block_ranks(units.to_numpy(), options.higher_is_better)
    result["mean_ranks"] = dict(zip(units.columns, np.round(ranks.mean(axis=0), 6)))
    if k < 3:
        result["note"] = f"k={k}: the Friedman test needs 3 or more methods; see the comparisons"
        return result
    if n < 2:
        result["note"] = f"N={n} unit: the Friedman test needs 2 or more"
        return result
    if n_seeds < stats.MIN_SEEDS:
        result["note"] = (
            f"no omnibus test: {n_seeds} seed(s); like the verdicts it needs at least {stats.MIN_SEEDS} (the test "
            "subjects of one seed share one trained model)"
        )
        return result
    if np.ptp(ranks, axis=1).max() == 0:
        result["note"] = "all methods tie on every unit: the Friedman test is undefined"
        return result
    chi2, p = sps.friedmanchisquare(*units.to_numpy().T)
    f, p_f = stats.iman_davenport(float(chi2), n, k)
    result |= {
        "friedman_chi2": float(chi2),
        "friedman_p": float(p),
        "iman_davenport_df": [k - 1, (k - 1) * (n - 1)],
        "nemenyi_q_alpha": stats.nemenyi_q(k, options.alpha),
        "nemenyi_cd": stats.nemenyi_cd(k, n, options.alpha),
    }
    notes = []
    if math.isnan(f):
        notes.append(f"{stats.F_UNDEFINED}; the diagram's gate is Friedman's p")
        test, p_decision = "Friedman", float(p)
    else:
        result |= {"iman_davenport_F": f, "iman_davenport_p": p_f}
        test, p_decision = "Iman–Davenport", p_f
    if p_decision >= options.alpha:
        notes.append(f"no CD diagram: the {test} test does not reject (p = {p_decision:.2g} ≥ α)")
    elif n < stats.MIN_CD_UNITS:
        notes.append(f"no CD diagram: N = {n} units, fewer than {stats.MIN_CD_UNITS}")
    else:
        result["draw_cd"] = True
    result["note"] = "; ".join(notes)
    return result


def setting_report(setting: str, part: pd.DataFrame, options: Options) -> SettingReport | None:
    """Summary and omnibus of one setting (None when it has no successful result)."""
    wide = wide_table(part, options.metric, options.scratch)
    if wide.empty:
        return None
    scopes = comparison_scopes(wide)
    summary, units = _summary(wide, scopes, sorted(wide.columns), options.higher_is_better)
    widest = summary[summary["scope"] == scopes[-1].name] if not summary.empty else summary
    n_seeds = int(widest["n_seeds"].min()) if not widest.empty else 0
    order = widest.sort_values(["mean_rank", "method"])["method"].tolist()
    order += sorted(set(wide.columns) - set(order))
    kinds = part.drop_duplicates("transfer").set_index("transfer")["transfer_type"]
    types = {
        s.name: ", ".join(sorted({kinds.get(t, "none") for t in s.transfers} - {"none"}) or ["none"]) for s in scopes
    }
    notes = []
    lost = sorted(set(wide.columns) - set(widest["method"]))
    if lost and len(scopes) > 1:
        notes.append(f"Not run on every transfer, so shown per transfer only: {', '.join(lost)}.")
    return SettingReport(
        setting=setting,
        suites=sorted(part["suite"].unique()),
        variants=order,
        scopes=scopes,
        types=types,
        summary=summary,
        omnibus=omnibus(units, n_seeds, options),
        notes=notes,
    )


def learning_curves(rows: pd.DataFrame, options: Options) -> list[tuple[str, pd.DataFrame]]:
    """Mean metric per few-shot K with the crossed-model CI, one curve per setting that differs only in K."""
    text = setting_text(rows).drop(columns="few_shot")
    keyed = rows.assign(_group=text.agg("\x1f".join, axis=1))
    curves = []
    for _, group in keyed.groupby("_group", sort=True):
        if group["few_shot"].nunique() < 2:
            continue
        out = []
        for k_shot, part in group.groupby("few_shot", sort=True):
            wide = wide_table(part, options.metric, options.scratch)
            variants = [v for v in wide.columns if wide[v].notna().any()]
            g = grids(wide, variants)
            for v, values in g.values.items():
                est = stats.crossed_interval(values.to_numpy(), options.alpha)
                out.append(
                    {
                        "method": v,
                        "few_shot": int(k_shot),
                        "n_units": g.n_units,
                        "n_seeds": g.n_seeds,
                        "mean": float(est.mean),
                        "ci_low": float(est.ci_low),
                        "ci_high": float(est.ci_high),
                    }
                )
        first = group.iloc[0]
        label = f"{first['dataset']} · {first['backbone']} · {first['target_steps']} steps"
        curves.append((label, pd.DataFrame(out)))
    return curves


def transferability(rows: pd.DataFrame, options: Options) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (setting, transfer): mean of each score and the control's gain over scratch; Kendall tau per setting."""
    scores = [c for c in score_columns(rows) if rows[c].notna().any()]
    if not scores or options.control is None or options.scratch is None:
        return pd.DataFrame(), pd.DataFrame()
    sign = 1.0 if options.higher_is_better else -1.0
    out = []
    for setting, part in rows.groupby("setting", sort=True):
        ok = part[(part["status"] == "ok") & (part["variant"] != options.scratch)]
        wide = wide_table(part, options.metric, options.scratch)
        if options.control not in wide.columns or options.scratch not in wide.columns:
            continue
        for transfer, cells in ok.groupby("transfer", sort=True):
            units = wide[wide.index.get_level_values("transfer") == transfer]
            g = grids(units, [options.control, options.scratch])
            if not g.values:
                continue
            diff = sign * (g.values[options.control] - g.values[options.scratch]).to_numpy()
            per_seed = cells.groupby("seed")[scores].mean()
            out.append(
                {
                    "setting": setting,
                    "transfer": transfer,
                    "transfer_type": cells["transfer_type"].iloc[0],
                    "n_units": g.n_units,
                    "n_seeds": g.n_seeds,
                    **{s: float(per_seed[s].mean()) for s in scores},
                    "gain": float(diff.mean()),
                }
            )
    table = pd.DataFrame(out)
    if table.empty:
        return table, pd.DataFrame()
    if {"leep", "nce"} <= set(table.columns):
        table["leep_minus_nce"] = table["leep"] - table["nce"]
    taus = [
        _kendall(setting, score, part[score], part["gain"], options.alpha)
        for setting, part in table.groupby("setting", sort=True)
        for score in scores
    ]
    return table, pd.DataFrame(taus)


def _kendall(setting: str, score: str, x: pd.Series, y: pd.Series, alpha: float) -> dict:
    valid = x.notna() & y.notna()
    n = int(valid.sum())
    row = {"setting": setting, "score": score, "n": n, "tau": math.nan, "p_value": math.nan, "note": ""}
    if n < stats.MIN_KENDALL_N:
        return row | {
            "note": f"not shown: {n} transfer(s); below {stats.MIN_KENDALL_N} the exact test cannot reach "
            f"p < 0.05 and τ is noise"
        }
    result = sps.kendalltau(x[valid], y[valid])
    return row | {"tau": float(result.statistic), "p_value": float(result.pvalue)}


def _coverage(rows: pd.DataFrame, dropped: dict[str, int]) -> dict:
    cells = rows.drop_duplicates("cell_key")
    return dropped | {
        "datasets": sorted(cells["dataset"].unique()),
        "suites": sorted(cells["suite"].unique()),
        "few_shot": sorted(int(k) for k in cells["few_shot"].unique()),
        "target_steps": sorted(int(k) for k in cells["target_steps"].unique()),
        "n_settings": int(rows["setting"].nunique()),
    }


def tuning(df: pd.DataFrame) -> dict[str, str]:
    """Per variant: ``tuned, N trials``, ``default``, or both (tuned and untuned rows share a name, not a setting)."""
    out = {}
    for variant, trials in df.groupby("variant")["tuned_trials"]:
        n = int(trials.max())
        text = f"tuned, {n} trials" if n > 0 else "default"
        out[variant] = f"{text} (settings with lr tuned); default elsewhere" if n > 0 and (trials <= 0).any() else text
    return out


def _empty_comparisons() -> pd.DataFrame:
    return pd.DataFrame(columns=COLUMNS + EXTRA_COLUMNS)


def verdict_tables(rows: pd.DataFrame, options: Options) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``comparisons.csv`` (every variant against the control) and ``negative_transfer.csv`` (against scratch)
    from ``prepared`` rows, each empty when its reference has no result; the run summary reads its verdicts here.
    """
    has = set(rows.loc[rows["status"] == "ok", "variant"])
    common = {"metric": options.metric, "scratch": options.scratch, "alpha": options.alpha, "margin": options.margin}
    tables = [
        compare(rows, reference, **common) if reference in has and len(has) > 1 else _empty_comparisons()
        for reference in (options.control, options.scratch)
    ]
    return tables[0], tables[1]


def analyse(
    df: pd.DataFrame, options: Options, include_smoke: bool = False, dropped: dict[str, int] | None = None
) -> Report:
    """Build every table and figure input from the (filtered) store rows; controls already resolved.

    ``dropped``: what earlier filters left out (``settings.left_out``), for the page to say so.
    """
    rows = prepared(df, options.scratch, include_smoke)
    ok = rows[rows["status"] == "ok"]
    if ok.empty:
        raise LeaderboardError("--results: no successful result for the chosen filters/region")
    reports = [r for s, part in rows.groupby("setting", sort=True) if (r := setting_report(s, part, options))]
    has = set(ok["variant"])
    comparisons, negative = verdict_tables(rows, options)
    power = pd.DataFrame()
    if options.control in has and len(has) > 1:
        common = {"metric": options.metric, "scratch": options.scratch, "alpha": options.alpha}
        power = power_table(rows, options.control, options.power_delta, **common)
    transfer, kendall = transferability(rows, options)
    return Report(
        options=options,
        settings=reports,
        comparisons=comparisons,
        negative_transfer=negative,
        transferability=transfer,
        kendall=kendall,
        learning_curves=learning_curves(rows, options),
        power=power,
        provenance=provenance(df, options.scratch),
        coverage=_coverage(rows, dropped or left_out(df, include_smoke)),
        tuning=tuning(rows),
        notes=list(df.attrs.get("notes", [])),
        without_results=sorted(set(rows["variant"]) - has),
    )
