"""End-of-run summary: per transfer, each method's Dice, which is best and by how much, and what to run next."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

import pandas as pd

from benchmarks.config import Cell
from benchmarks.core.options import DEFAULT_MARGIN
from benchmarks.core.schema import SETTING_SCHEMA
from leaderboard.store import variant_names, with_run_defaults

MIN_SEEDS = 3  # below this no interval is shown (docs/statistics.md: seeds share nothing else)
CONTROLS = ("finetune", "scratch")
# Setting columns (benchmarks.cell.setting_columns) that a run's cells fix: rows of the store that differ in
# one are another setting and stay out of this run's table. Not these: lr (a tuned row's is its study's
# choice), source_steps (0 for scratch), omp_wait (provenance). A missing value (a row written before its
# column existed) matches, as in the leaderboard.
SAME_SETTING = tuple(c for c in SETTING_SCHEMA if c not in ("lr", "source_steps", "omp_wait"))


def _label(variant: str, tuned: float, lr: float) -> str:
    return variant + (f" (tuned, {int(tuned)} trials, lr {lr:.3g})" if tuned > 0 else "")


def _blocks(cells: list[Cell]) -> list[tuple[str, str, int]]:
    """(source, target, K) of every transfer of the run; a target with scratch only gets source ''."""
    transfers = sorted({(c.source_task, c.target_task, c.few_shot) for c in cells if c.source_task})
    alone = {("", c.target_task, c.few_shot) for c in cells} - {("", t, k) for _, t, k in transfers}
    return transfers + sorted(alone)


def _run_settings(cells: list[Cell]) -> dict[str, set]:
    """Per ``SAME_SETTING`` column, the values this run's cells write."""
    from benchmarks.cell import setting_columns  # torch: loaded already where a run ends

    settings = [setting_columns(c) for c in cells]
    return {column: {s[column] for s in settings} for column in SAME_SETTING}


def _rows_of(
    rows: pd.DataFrame, cells: list[Cell], settings: dict[str, set], source: str, target: str, k: int
) -> pd.Series:
    """Test rows of one transfer at K in this run's setting (``_run_settings``), scratch rows of its target included."""
    same = (rows["target_task"] == target) & rows["source_task"].isin([source, ""]) & (rows["few_shot"] == k)
    same &= rows["dataset"].isin({c.dataset for c in cells}) & rows["backbone"].isin({c.backbone for c in cells})
    same &= rows["target_steps"].isin({c.budget.target_steps for c in cells})
    for column in (c for c in SAME_SETTING if c in rows.columns):
        same &= rows[column].isna() | rows[column].isin(settings[column])
    return same & (rows["split"] == "test")  # tuning trials score the validation subjects: never in this table


def _interval(out: Path, keys: set[str], best: str, control: str, margin: float = DEFAULT_MARGIN) -> str:
    """``[95% CI lo, hi; verdict]`` from the leaderboard's crossed (seed x subject) model, on this transfer.

    The verdict is the leaderboard's (``stats.verdicts``), ``equivalent`` included: TOST within +-``margin`` Dice.
    """
    from leaderboard import compare, load_store  # scipy/statsmodels: only when an interval is asked for
    from leaderboard.errors import LeaderboardError

    try:
        frame = load_store(out)
        table = compare(frame[frame["cell_key"].isin(keys)], control, include_smoke=True, margin=margin)
    except LeaderboardError as exc:  # the run's results stay valid; the summary says why there is no interval
        return f" (no interval: {exc})"
    row = table[(table["method"] == best) & (table["scope"] == "all")]
    if row.empty or pd.isna(row["ci_low"].iloc[0]):
        return ""
    r = row.iloc[0]
    verdict = f"equivalent within ±{margin:g}" if r.verdict == "equivalent" else r.verdict
    return f" [95% CI {r.ci_low:+.3f}, {r.ci_high:+.3f}; {verdict}]"


def _verdict(sub: pd.DataFrame, out: Path, margin: float = DEFAULT_MARGIN) -> str:
    """``best: X (Dice m): +d vs finetune [CI], +d vs scratch [CI]`` for one transfer.

    Each control is the one of the best's kind (tuned, or not): tuned and untuned rows are separate settings.
    """
    ok = sub[sub["status"] == "ok"]
    if ok.empty:
        return "  no finished cell"
    ok = ok.assign(label=[_label(v, t, lr) for v, t, lr in zip(ok["variant"], ok["tuned_trials"], ok["lr"])])
    means = ok.groupby("label")["dice"].mean()
    best = str(means.idxmax())
    kind = ok.loc[ok["label"] == best, "tuned_trials"].iloc[0] > 0
    same_kind = ok[(ok["tuned_trials"] > 0) == kind]
    best_variant = same_kind.loc[same_kind["label"] == best, "variant"].iloc[0]
    parts = []
    for control in CONTROLS:
        if control == best_variant:
            continue
        labels = sorted(set(same_kind.loc[same_kind["variant"] == control, "label"]))
        if len(labels) != 1:
            parts.append(f"no {control} in this run" if not labels else f"several {control} variants")
            continue
        seeds = min(ok.loc[ok["label"] == label, "seed"].nunique() for label in (best, labels[0]))
        keys = set(sub.loc[(sub["tuned_trials"] > 0) == kind, "cell_key"])
        interval = _interval(out, keys, best_variant, control, margin) if seeds >= MIN_SEEDS else ""
        parts.append(f"{means[best] - means[labels[0]]:+.3f} vs {control}{interval}")
    if best_variant == "scratch":
        parts.append("no transferred model beat training from scratch (negative transfer, if it holds over seeds)")
    return f"  best: {best} (Dice {means[best]:.3f}): {'; '.join(parts)}"


def run_summary(
    rows: pd.DataFrame, cells: list[Cell], out: Path, smoke: bool = False, margin: float = DEFAULT_MARGIN
) -> str:
    """The run's answer, per transfer: every method's mean Dice, the best one and its margin over the controls.

    ``rows`` is the whole store (``Store.read``); methods another run put in it for the same transfer
    and setting are shown too. Variants are named as the leaderboard names them (``trm(alpha=2)``).
    ``smoke`` (the run used ``--steps``) adds ``--include-smoke`` to the leaderboard command; ``margin``
    (``--margin``, Dice) is the verdicts' practical-equivalence margin, passed on to that command too.
    """
    lines: list[str] = []
    if not rows.empty:
        rows = with_run_defaults(rows)
        rows = rows.assign(variant=variant_names(rows))
    settings = _run_settings(cells) if not rows.empty else {}
    for source, target, k in _blocks(cells) if not rows.empty else []:
        sub = rows[_rows_of(rows, cells, settings, source, target, k)]
        sub = sub.assign(lr=sub.get("lr", float("nan")))
        if sub.empty:
            continue
        kind = sub.loc[sub["source_task"] != "", "transfer_type"]
        kind = f"{kind.iloc[0]}, " if len(kind) else ""
        steps = ", ".join(str(s) for s in sorted(sub["target_steps"].unique()))
        lines.append(f"\n{source or 'scratch'} -> {target}  ({kind}K={k or 'all'}, {steps} target steps)")
        ran = sub[sub["status"] != "skipped"]  # a cell its method declined (Method.check) is listed with its reason
        groups = [(_label(*name), grp) for name, grp in ran.groupby(["variant", "tuned_trials", "lr"], dropna=False)]
        width = max([32, *(len(label) for label, _ in groups)])
        lines.append(f"  {'method':<{width}} {'Dice':>15} {'n':>5} {'seeds':>6} {'failed':>7}")
        for label, grp in groups:
            ok = grp[grp["status"] == "ok"]
            mean, std = ok["dice"].mean(), ok["dice"].std(ddof=1) if len(ok) > 1 else 0.0
            failed = grp.loc[grp["status"] == "failed", "cell_key"].nunique()
            dice = f"{mean:.3f} ± {std:.3f}" if len(ok) else "-"
            lines.append(f"  {label:<{width}} {dice:>15} {len(ok):>5} {ok['seed'].nunique():>6} {failed:>7}")
        declined = sub.loc[sub["status"] == "skipped", ["variant", "error"]].drop_duplicates()
        lines += [f"  skipped: {variant}: {reason}" for variant, reason in declined.itertuples(index=False)]
        lines.append(_verdict(sub, out, margin))
    lines += _footer(rows, cells, out, smoke, margin)
    return "\n".join(lines)


def _footer(rows: pd.DataFrame, cells: list[Cell], out: Path, smoke: bool, margin: float = DEFAULT_MARGIN) -> list[str]:
    mine = rows[rows["cell_key"].isin({c.key for c in cells})] if not rows.empty else rows
    seeds = int(mine["seed"].nunique()) if len(mine) else 0
    lines = [
        "\nDice: mean ± std over rows; n = rows = test subjects x regions x seeds (one row per test subject "
        "and region of every seed); best = highest mean Dice, its margin = difference of the means."
    ]
    if any("*" in t for c in cells for t in (c.source_task, c.target_task)):
        lines.append("A * in a task name means every group (institution) pooled, e.g. *-t1ce-TC.")
    if seeds < MIN_SEEDS:
        lines.append(
            f"These numbers stand on {seeds} seed(s). Fewer than {MIN_SEEDS} seeds cannot establish a difference "
            "between methods (no interval is shown): rerun with --seeds 0 1 2 (or more)."
        )
    else:
        lines.append(
            "Intervals: 95% CI of the difference from the leaderboard's crossed seed x subject model, "
            "computed on this transfer alone (the leaderboard corrects for all comparisons at once). Verdict "
            f"equivalent: not different, and the 90% CI lies within ±{margin:g} Dice (--margin; two one-sided "
            "tests); inconclusive: neither shown."
        )
    command = [interpreter(), "-m", "leaderboard.build", "--results", str(out), "--out", str(out / "site")]
    if not rows.empty and rows["suite"].nunique() > 1:
        command += [a for s in sorted({c.suite for c in cells}) for a in ("--suite", s)]
    if smoke:
        command.append("--include-smoke")
    if margin != DEFAULT_MARGIN:
        command += ["--margin", str(margin)]
    lines.append(f"Results: {mine['cell_key'].nunique() if len(mine) else 0} cells in {Path(out).resolve()}/cells")
    lines.append(f"Next, tables with paired tests and figures: {shlex.join(command)}")
    return lines


def interpreter() -> str:
    """The interpreter running this, as the next command should call it without an activated venv: ``python``
    when that name finds it, else its path relative to the working folder (``.venv/bin/python``), else absolute."""
    executable = sys.executable or "python"
    for name in ("python", "python3"):
        if shutil.which(name) == executable:
            return name
    path = Path(executable)
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else executable
