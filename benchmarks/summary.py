"""End-of-run summary: per transfer, each method's Dice, which is best and by how much, and what to run next."""

from __future__ import annotations

import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmarks.config import Cell
from benchmarks.core.options import DEFAULT_MARGIN
from benchmarks.core.settings import same_setting, transfer_only
from leaderboard.stats import MIN_SEEDS
from leaderboard.store import variant_names, with_run_defaults

CONTROLS = ("finetune", "scratch")
# Setting columns (benchmarks.cell.setting_columns) that a run's cells fix: rows of the store that differ in
# one are another setting and stay out of this run's table (benchmarks.core.settings.same_setting). A missing
# value (a row written before its column existed) matches, as in the leaderboard.
SAME_SETTING = same_setting()
# Settings only transferred cells have (source steps, a shared source model): the run's transferred rows fix them,
# scratch rows match any value.
TRANSFER_ONLY = transfer_only()


def _label(variant: str, tuned: float, lr: float) -> str:
    return variant + (f" (tuned, {int(tuned)} trials, lr {lr:.3g})" if tuned > 0 else "")


def _blocks(cells: list[Cell]) -> list[tuple[str, str, int]]:
    """(source, target, K) of every transfer of the run; a target with scratch only gets source ''."""
    transfers = sorted({(c.source_task, c.target_task, c.few_shot) for c in cells if c.source_task})
    alone = {("", c.target_task, c.few_shot) for c in cells} - {("", t, k) for _, t, k in transfers}
    return transfers + sorted(alone)


def _run_settings(cells: list[Cell]) -> dict[str, set]:
    """Per ``SAME_SETTING`` column, the values this run's cells write; per ``TRANSFER_ONLY`` one, its transferred
    cells'."""
    from benchmarks.cell import setting_columns  # torch: loaded already where a run ends

    settings = [(c, setting_columns(c)) for c in cells]
    fixed = {column: {s[column] for _, s in settings} for column in SAME_SETTING}
    return fixed | {column: {s[column] for c, s in settings if c.source_task} for column in TRANSFER_ONLY}


def _rows_of(
    rows: pd.DataFrame, cells: list[Cell], settings: dict[str, set], source: str, target: str, k: int
) -> pd.Series:
    """Test rows of one transfer at K in this run's setting (``_run_settings``), scratch rows of its target included."""
    same = (rows["target_task"] == target) & rows["source_task"].isin([source, ""]) & (rows["few_shot"] == k)
    same &= rows["dataset"].isin({c.dataset for c in cells}) & rows["backbone"].isin({c.backbone for c in cells})
    for column in (c for c in SAME_SETTING if c in rows.columns):
        same &= rows[column].isna() | rows[column].isin(settings[column])
    for column in (c for c in TRANSFER_ONLY if c in rows.columns):
        same &= rows[column].isna() | (rows["source_task"] == "") | rows[column].isin(settings[column])
    return same & (rows["split"] == "test")  # tuning trials score the validation subjects: never in this table


@dataclass(frozen=True)
class Verdicts:
    """The leaderboard's comparison tables (per control) as its printed command computes them, and the setting of
    each cell (a scratch cell joins every transfer setting it matches); ``error`` when it could not be computed."""

    tables: dict[str, pd.DataFrame]
    settings: pd.DataFrame  # cell_key, setting
    error: str = ""

    def row(self, keys: set[str], best: str, control: str, transfer: str) -> pd.Series | None:
        """The per-transfer row of ``best`` against ``control`` in the one setting of the transfer cells ``keys``."""
        table = self.tables.get(control)
        settings = set(self.settings.loc[self.settings["cell_key"].isin(keys), "setting"])
        if table is None or len(settings) != 1:
            return None
        hit = table[(table["setting"] == settings.pop()) & (table["scope"] == transfer) & (table["method"] == best)]
        return hit.iloc[0] if len(hit) == 1 else None


def leaderboard_verdicts(command: list[str]) -> Verdicts:
    """``comparisons.csv`` and ``negative_transfer.csv`` of the leaderboard ``command`` (its argv), computed by
    the leaderboard's own functions on the rows its filters keep, so the summary's verdicts are the page's."""
    from leaderboard.analysis import verdict_tables  # scipy: loaded where a run ends
    from leaderboard.build import parser, selected
    from leaderboard.comparisons import prepared
    from leaderboard.errors import LeaderboardError

    args = parser().parse_args(command[command.index("leaderboard.build") + 1 :])
    try:
        df, options, _ = selected(args)
        rows = prepared(df, options.scratch, args.include_smoke)
        comparisons, negative = verdict_tables(rows, options)
    except LeaderboardError as exc:  # the run's results stay valid; the summary says why there is no verdict
        return Verdicts({}, pd.DataFrame(columns=["cell_key", "setting"]), str(exc))
    tables = {name: table for name, table in ((options.control, comparisons), (options.scratch, negative)) if name}
    return Verdicts(tables, rows[["cell_key", "setting"]].drop_duplicates(), "")


def _comparison(verdicts: Verdicts, keys: set[str], best: str, control: str, transfer: str, margin: float) -> str:
    """``+d vs control [95% CI lo, hi; verdict]``: the leaderboard's per-transfer row, interval from 3 seeds."""
    if verdicts.error:
        return f"vs {control}: not on the leaderboard ({verdicts.error})"
    r = verdicts.row(keys, best, control, transfer)
    if r is None:
        return f"vs {control}: no paired result (no seed and test subject in common, or several settings)"
    text = f"{r['mean_diff']:+.3f} vs {control}"
    if r["n_seeds"] < MIN_SEEDS or pd.isna(r["ci_low"]):
        return text
    verdict = f"equivalent within ±{margin:g}" if r["verdict"] == "equivalent" else r["verdict"]
    note = f" ({r['note']})" if r["note"] else ""
    return f"{text} [95% CI {r['ci_low']:+.3f}, {r['ci_high']:+.3f}; {verdict}]{note}"


def _verdict(sub: pd.DataFrame, verdicts: Verdicts, transfer: str, margin: float = DEFAULT_MARGIN) -> str:
    """``best: X (Dice m): +d vs finetune [CI; verdict], +d vs scratch [CI; verdict]`` for one transfer.

    Each control is the one of the best's kind (tuned, or not): tuned and untuned rows are separate settings.
    Where scratch is best, each transferred method's row against scratch follows (``finetune -d vs scratch``).
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
        pair = same_kind[same_kind["label"].isin([best, labels[0]]) & (same_kind["source_task"] != "")]
        keys = set(pair["cell_key"])  # the transfer's cells: scratch's join every setting they match
        parts.append(_comparison(verdicts, keys, best_variant, control, transfer, margin))
    if best_variant == "scratch":  # no transferred model beat scratch: each one's row against it (negative transfer?)
        for variant in sorted(set(same_kind.loc[same_kind["source_task"] != "", "variant"])):
            keys = set(same_kind.loc[same_kind["variant"] == variant, "cell_key"])  # scratch's rows join its setting
            parts.append(f"{variant} {_comparison(verdicts, keys, variant, 'scratch', transfer, margin)}")
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
    verdicts = leaderboard_verdicts(leaderboard_command(rows, cells, out, smoke, margin)) if not rows.empty else None
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
        lines.append(_verdict(sub, verdicts, f"{source}->{target}", margin))
    lines += _footer(rows, cells, out, smoke, margin)
    return "\n".join(lines)


def leaderboard_command(rows: pd.DataFrame, cells: list[Cell], out: Path, smoke: bool, margin: float) -> list[str]:
    """The leaderboard command the summary prints (argv); the summary's verdicts are computed from it."""
    command = [interpreter(), "-m", "leaderboard.build", "--results", str(out), "--out", str(out / "site")]
    if not rows.empty and rows["suite"].nunique() > 1:
        command += [a for s in sorted({c.suite for c in cells}) for a in ("--suite", s)]
    if smoke:
        command.append("--include-smoke")
    if margin != DEFAULT_MARGIN:
        command += ["--margin", str(margin)]
    return command


def _footer(rows: pd.DataFrame, cells: list[Cell], out: Path, smoke: bool, margin: float = DEFAULT_MARGIN) -> list[str]:
    mine = rows[rows["cell_key"].isin({c.key for c in cells})] if not rows.empty else rows
    seeds = int(mine["seed"].nunique()) if len(mine) else 0
    lines = [
        "\nDice: mean ± std over rows; n = rows = test subjects x regions x seeds (one row per test subject "
        "and region of every seed); best = highest mean Dice. vs finetune / vs scratch: the leaderboard's row for "
        "this transfer (comparisons.csv / negative_transfer.csv, scope = the transfer, from the command below): "
        "the mean difference paired on seed and test subject."
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
            "Intervals: 95% CI of the crossed seed x subject model, unadjusted; verdicts with Holm over every method "
            "and transfer of the setting in this store against that control, as on the page (so a CI that excludes 0 "
            f"can still be inconclusive). Verdict equivalent: not different, and the 90% CI lies within ±{margin:g} "
            "Dice (--margin; two one-sided tests); inconclusive: neither shown."
        )
    command = leaderboard_command(rows, cells, out, smoke, margin)
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
