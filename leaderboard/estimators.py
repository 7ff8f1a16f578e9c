"""The estimator section of the leaderboard: does an estimator's score predict the gain of fine-tuning over
scratch across transfers, and does its location map find the ground-truth risk (docs/design.md
§Transferability estimators, "Evaluation")?

It reads ``RESULTS/estimators/*.parquet`` (``python -m benchmarks.estimate``) beside the store's cells. An
estimate belongs to the setting of the ``finetune`` cell whose key names it (the job scores that cell's source
model on that cell's target training slices); estimates whose cell is not among the analysed rows are left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import stats as sps

from benchmarks.core.schema import ESTIMATES_DIR
from leaderboard.analysis import Options
from leaderboard.comparisons import prepared
from leaderboard.render import markdown_table
from leaderboard.tables import METRIC_LABELS, Table, TableCell
from leaderboard.units import grids, wide_table

MIN_TRANSFERS = 8  # τ is shown from this many transfers of a setting on (issue 22)
N_BOOT = 2000  # bootstrap replicates of the τ intervals
BOOT_SEED = 0
# The columns of an estimates file this module reads (benchmarks.estimate writes them, with provenance beside).
COLUMNS = (
    "cell_key",
    "kind",
    "estimator",
    "value",
    "subject_id",
    "seed",
    "transfer",
    "transfer_type",
    "auroc",
    "ap",
    "n_pixels",
    "n_risk",
)


@dataclass
class EstimatorReport:
    """The section's tables (empty frames when the results folder has no estimates) and what was left out."""

    scores: pd.DataFrame  # per (setting, transfer, estimator): mean score over seeds and the realised gain
    transfer: pd.DataFrame  # per (setting, estimator): Kendall τ and weighted τ with bootstrap intervals
    maps: pd.DataFrame  # per (setting, transfer, estimator): AUROC and AP with t intervals over subjects
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.scores.empty and self.maps.empty


def load_estimates(results: Path) -> tuple[pd.DataFrame, list[str]]:
    """Every estimate row under ``results`` (files in ``estimators/`` folders) and warnings for unreadable files."""
    frames, warnings = [], []
    for path in sorted(Path(results).rglob(f"{ESTIMATES_DIR}/*.parquet")):
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError, pa.ArrowException) as exc:
            warnings.append(f"warning: skipped unreadable estimates file {path} ({type(exc).__name__})")
            continue
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            warnings.append(f"warning: skipped estimates file {path}: missing column(s) {', '.join(missing)}")
            continue
        frames.append(frame)
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))), warnings


def _pairs(values: np.ndarray) -> np.ndarray:
    """(..., n) -> (..., n (n - 1) / 2): sign(v_i - v_j) for every pair i < j."""
    i, j = np.triu_indices(values.shape[-1], k=1)
    return np.sign(values[..., i] - values[..., j])


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's τ_b of each row of x and y (..., n); NaN where one row is constant."""
    sx, sy = _pairs(x), _pairs(y)
    # Kendall 1945, "The treatment of ties in ranking problems", Biometrika: (P - Q) / sqrt((n0 - n1)(n0 - n2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sx * sy).sum(-1) / np.sqrt((sx != 0).sum(-1) * (sy != 0).sum(-1))


def _weighted_tau_by(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Weighted τ with the importance of the decreasing lexicographic rank by (x, y)."""
    order = np.lexsort((-y, -x), axis=-1)
    rank = np.argsort(order, axis=-1)
    weight = 1.0 / (rank + 1.0)  # hyperbolic weigher w(r) = 1 / (r + 1), rank 0 the most important
    i, j = np.triu_indices(x.shape[-1], k=1)
    pair = weight[..., i] + weight[..., j]  # additive: an exchange of i and j weighs w(r_i) + w(r_j)
    sx, sy = _pairs(x), _pairs(y)
    # Vigna 2015, "A weighted correlation index for rankings with ties", WWW, eq. (3): <s, t>_w / (|s|_w |t|_w)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sx * sy * pair).sum(-1) / np.sqrt((sx * sx * pair).sum(-1) * (sy * sy * pair).sum(-1))


def weighted_tau(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Vigna's weighted τ of each row of x and y (..., n), hyperbolic additive weights, averaged over the two
    importance rankings by (x, y) and by (y, x): scipy.stats.weightedtau(x, y, rank=True)."""
    return (_weighted_tau_by(x, y) + _weighted_tau_by(y, x)) / 2


def _gains(part: pd.DataFrame, transfers: list[str], options: Options) -> pd.DataFrame:
    """Per (transfer, seed) of one setting: the control's mean gain over scratch on the units the leaderboard
    pairs (``units.grids``: complete seed x test-subject grid, each subject's regions averaged)."""
    wide = wide_table(part, options.metric, options.scratch)
    if options.control not in wide.columns or options.scratch not in wide.columns:
        return pd.DataFrame(columns=["transfer", "seed", "gain"])
    sign = 1.0 if options.higher_is_better else -1.0
    out = []
    for transfer in transfers:
        g = grids(wide[wide.index.get_level_values("transfer") == transfer], [options.control, options.scratch])
        if g.values:
            diff = sign * (g.values[options.control] - g.values[options.scratch]).mean(axis=1)
            out += [{"transfer": transfer, "seed": seed, "gain": float(v)} for seed, v in diff.items()]
    return pd.DataFrame(out, columns=["transfer", "seed", "gain"])


def _complete(score: pd.DataFrame, gain: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The (transfer x seed) tables cut to a complete grid: drop the seeds some transfer lacks, or the transfers
    that lack a seed, whichever keeps more values (as ``units.grids``); and what was dropped."""
    present = score.notna() & gain.notna()
    seeds, transfers = present.all(axis=0), present.all(axis=1)
    if seeds.sum() * len(present.index) >= transfers.sum() * len(present.columns):
        dropped = [str(s) for s in present.columns[~seeds]]
        note = f"seed(s) {', '.join(dropped)} left out (a transfer lacks them)" if dropped else ""
        return score.loc[:, seeds], gain.loc[:, seeds], note
    note = f"{int((~transfers).sum())} transfer(s) left out (they lack a seed)"
    return score.loc[transfers], gain.loc[transfers], note


def _tau_row(score: pd.DataFrame, gain: pd.DataFrame, alpha: float, rng_seed: int) -> dict:
    """τ and weighted τ of the per-transfer means over seeds, with percentile bootstrap intervals over seeds."""
    n, s = score.shape
    row = {"n_transfers": n, "n_seeds": s}
    nan = {f"{k}{e}": math.nan for k in ("tau", "wtau") for e in ("", "_low", "_high")}
    if n < MIN_TRANSFERS:
        return row | nan | {"note": f"not shown: {n} transfer(s); τ is shown from {MIN_TRANSFERS} on"}
    x, y = score.to_numpy(float), gain.to_numpy(float)
    out = row | nan | {"tau": float(kendall_tau_b(x.mean(1), y.mean(1))), "note": ""}
    out["wtau"] = float(weighted_tau(x.mean(1), y.mean(1)))
    if s < 2:
        return out | {"note": "one seed: no interval"}
    # Resample seeds with replacement (the same draw for every transfer), recompute the per-transfer means and τ;
    # percentile interval (Efron & Tibshirani 1993, "An Introduction to the Bootstrap", ch. 13).
    draw = np.random.default_rng(rng_seed).integers(0, s, size=(N_BOOT, s))
    bx, by = x[:, draw].mean(-1).T, y[:, draw].mean(-1).T  # (N_BOOT, n)
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    for name, values in (("tau", kendall_tau_b(bx, by)), ("wtau", weighted_tau(bx, by))):
        finite = values[np.isfinite(values)]
        if finite.size:
            out[f"{name}_low"], out[f"{name}_high"] = (float(v) for v in np.percentile(finite, q))
    return out


def _t_interval(values: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """Mean and Student t interval of ``values`` in [0, 1]: mean ± t_{1-α/2, n-1} s / sqrt(n), clipped to [0, 1]
    (NaN bounds below 2 values)."""
    if values.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if values.size < 2:
        return mean, math.nan, math.nan
    half = float(sps.t.ppf(1 - alpha / 2, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size))
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def _map_rows(maps: pd.DataFrame, alpha: float) -> list[dict]:
    """Per (setting, transfer, estimator): AUROC and AP over subjects (each averaged over its seeds)."""
    out = []
    for (setting, transfer, estimator), part in maps.groupby(["setting", "transfer", "estimator"], sort=True):
        per_subject = part.groupby("subject_id")[["auroc", "ap"]].mean()
        auroc = per_subject["auroc"].dropna().to_numpy()
        ap = per_subject["ap"].dropna().to_numpy()
        a, a_low, a_high = _t_interval(auroc, alpha)
        p, p_low, p_high = _t_interval(ap, alpha)
        pixels = int(part["n_pixels"].sum())
        note = ""
        if auroc.size == 0:
            note = "no subject has both risk and safe brain pixels: nothing to locate (e.g. dial level 0)"
        elif auroc.size < 2:
            note = "one subject: no interval"
        out.append(
            {
                "setting": setting,
                "transfer": transfer,
                "transfer_type": part["transfer_type"].iloc[0],
                "estimator": estimator,
                "n_subjects": int(auroc.size),
                "n_seeds": int(part["seed"].nunique()),
                "auroc": a,
                "auroc_low": a_low,
                "auroc_high": a_high,
                "ap": p,
                "ap_low": p_low,
                "ap_high": p_high,
                "risk_share": float(part["n_risk"].sum() / pixels) if pixels else math.nan,
                "note": note,
            }
        )
    return out


def estimator_report(results: Path, df: pd.DataFrame, options: Options, include_smoke: bool) -> EstimatorReport:
    """The section from the estimates under ``results`` and the (filtered) store rows ``df``."""
    empty = EstimatorReport(pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    est, notes = load_estimates(results)
    if est.empty:
        return EstimatorReport(empty.scores, empty.transfer, empty.maps, notes)
    rows = prepared(df, options.scratch, include_smoke)
    ok = rows[rows["status"] == "ok"]
    setting_of = ok.drop_duplicates("cell_key").set_index("cell_key")["setting"]
    est = est.assign(setting=est["cell_key"].map(setting_of))
    unmatched = est.loc[est["setting"].isna(), "cell_key"].nunique()
    if unmatched:
        notes.append(
            f"{unmatched} estimate file(s) left out: their finetune cell is not among the analysed results (not run, "
            "filtered out, or a smoke run without --include-smoke)"
        )
    est = est[est["setting"].notna()]
    scores = est[est["kind"] == "score"]
    score_rows, tau_rows = [], []
    for setting, part in scores.groupby("setting", sort=True):
        transfers = sorted(part["transfer"].unique())
        gain = _gains(rows[rows["setting"] == setting], transfers, options).pivot_table(
            index="transfer", columns="seed", values="gain"
        )
        for estimator, mine in part.groupby("estimator", sort=True):
            score = mine.pivot_table(index="transfer", columns="seed", values="value")
            score, g = score.align(gain, join="inner")
            score, g, dropped = _complete(score, g)
            for transfer in score.index:
                score_rows.append(
                    {
                        "setting": setting,
                        "transfer": transfer,
                        "estimator": estimator,
                        "n_seeds": score.shape[1],
                        "score": float(score.loc[transfer].mean()),
                        "gain": float(g.loc[transfer].mean()),
                    }
                )
            tau = {"setting": setting, "estimator": estimator} | _tau_row(score, g, options.alpha, BOOT_SEED)
            tau_rows.append(tau | {"note": "; ".join(n for n in (tau["note"], dropped) if n)})
    maps = pd.DataFrame(_map_rows(est[est["kind"] == "map"], options.alpha))
    return EstimatorReport(pd.DataFrame(score_rows), pd.DataFrame(tau_rows), maps, notes)


def _interval(value: float, low: float, high: float, signed: bool) -> str:
    """``+0.41 [+0.12, +0.66]`` (τ, signed) or ``0.823 [0.594, 1.000]``; the value alone without bounds, ``–`` when
    missing."""
    fmt = "{:+.2f}" if signed else "{:.3f}"
    if math.isnan(value):
        return "–"
    if math.isnan(low):
        return fmt.format(value)
    return f"{fmt.format(value)}\n[{fmt.format(low)}, {fmt.format(high)}]"


def transfer_table(er: EstimatorReport, options: Options) -> Table:
    """Kendall τ and weighted τ between each estimator's score and the realised gain, per setting."""
    level = round(100 * (1 - options.alpha))
    rows = [
        [
            TableCell(r["setting"]),
            TableCell(r["estimator"]),
            TableCell(str(r["n_transfers"])),
            TableCell(str(r["n_seeds"])),
            TableCell(_interval(r["tau"], r["tau_low"], r["tau_high"], True)),
            TableCell(_interval(r["wtau"], r["wtau_low"], r["wtau_high"], True)),
            TableCell(r["note"]),
        ]
        for r in er.transfer.to_dict("records")
    ]
    headers = ["Setting", "Estimator", "Transfers", "Seeds", f"Kendall τ [{level}% CI]", f"weighted τ [{level}% CI]"]
    headers.append("Note")
    notes = [
        f"Does an estimator rank the transfers by their realised gain? Gain: {options.control} − {options.scratch} "
        f"({METRIC_LABELS[options.metric]}, positive = better), the leaderboard's paired units, per transfer averaged "
        "over seeds; score: the estimator of the seed's source model on the target training slices of its few-shot "
        "draw (python -m benchmarks.estimate), averaged over seeds. τ > 0: a higher score goes with a larger gain.",
        "Kendall τ_b (Kendall 1945); weighted τ with hyperbolic weights (Vigna 2015, 'A weighted correlation index "
        "for rankings with ties', WWW; scipy.stats.weightedtau), which counts exchanges among the top-ranked "
        "transfers most, as used for transferability by Agostinelli et al. (ECCV 2022, 'How stable are "
        "transferability metrics evaluations?').",
        f"Interval: percentile bootstrap over seeds ({N_BOOT} replicates, seeded): seeds resampled with replacement, "
        f"per-transfer means of score and gain and τ recomputed. τ is shown from {MIN_TRANSFERS} transfers of a "
        "setting on.",
    ]
    return Table("Transferability estimators: score vs realised gain", headers, rows, notes + er.notes)


def map_table(er: EstimatorReport, options: Options) -> Table:
    """AUROC and AP of each estimator's location map against the ground-truth risk, per transfer."""
    level = round(100 * (1 - options.alpha))
    rows = [
        [
            TableCell(r["setting"]),
            TableCell(r["transfer"].replace("->", " → ")),
            TableCell(r["estimator"]),
            TableCell(str(r["n_subjects"])),
            TableCell(str(r["n_seeds"])),
            TableCell(_interval(r["auroc"], r["auroc_low"], r["auroc_high"], False)),
            TableCell(_interval(r["ap"], r["ap_low"], r["ap_high"], False)),
            TableCell("–" if math.isnan(r["risk_share"]) else f"{r['risk_share']:.3f}"),
            TableCell(r["note"]),
        ]
        for r in er.maps.to_dict("records")
    ]
    headers = ["Setting", "Transfer", "Estimator", "Subjects", "Seeds", f"AUROC [{level}% CI]", f"AP [{level}% CI]"]
    notes = [
        "Does the map find the risk? Risk score: −map (a window's low transferability = high risk), expanded to "
        "pixels as trm does, against the dataset's ground-truth risk (> 0.5) over the brain pixels (image ≠ 0) of "
        "each target training subject's slices; AUROC 0.5 = chance, AP's chance level is the risk share.",
        "Per subject the mean over the seeds whose few-shot draw holds it; interval: Student t over subjects, "
        "clipped to [0, 1].",
    ]
    return Table("Risk maps vs ground-truth risk", [*headers, "Risk share", "Note"], rows, notes)


def tables(er: EstimatorReport, options: Options) -> list[tuple[str, Table]]:
    """The section's tables with their page ids: the transfer level when scores exist, the map level when maps do."""
    out = []
    if not er.transfer.empty:
        out.append(("estimators-transfer", transfer_table(er, options)))
    if not er.maps.empty:
        out.append(("estimators-maps", map_table(er, options)))
    return out


def write_csvs(er: EstimatorReport, out: Path) -> None:
    """``estimators_transfer.csv``, ``estimators_scores.csv`` and ``estimators_maps.csv`` where they have rows."""
    for name, frame in (("transfer", er.transfer), ("scores", er.scores), ("maps", er.maps)):
        if not frame.empty:
            frame.to_csv(out / f"estimators_{name}.csv", index=False)


def markdown(er: EstimatorReport, options: Options) -> str:
    """The section as Markdown ('' without estimates)."""
    return "".join(markdown_table(table) + "\n" for _, table in tables(er, options))
