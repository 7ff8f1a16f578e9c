"""``python -m leaderboard.build --results DIR --out DIR2``: tables, figures and a page from a store."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd

from benchmarks.core.options import OneLineParser, add_margin
from datasets.core.files import umask_mode
from leaderboard import dial, estimators
from leaderboard.analysis import Options, Report, analyse
from leaderboard.comparisons import resolve_variant
from leaderboard.errors import LeaderboardError
from leaderboard.html import page
from leaderboard.render import to_latex, to_markdown
from leaderboard.settings import left_out, select
from leaderboard.store import load_store
from leaderboard.tables import METRIC_LABELS, setting_table
from leaderboard.units import METRICS

PROG = "python -m leaderboard.build"
OUTPUT_PATTERNS = (
    "cd_diagram*.png",
    "learning_curve*.png",
    "dial_*.png",
    "dial.csv",
    "gains.png",
    "transferability.csv",
    "estimators_*.csv",
)


def _alpha(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1), got {text}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = OneLineParser(prog=PROG, description=__doc__)
    p.add_argument("--results", type=Path, required=True, help="results folder (all *.parquet under it; only read)")
    p.add_argument("--out", type=Path, required=True, help="output folder (created once the inputs validate)")
    p.add_argument("--control", help="method every other is compared with (default: finetune)")
    p.add_argument("--scratch", help="no-transfer reference for negative transfer (default: scratch)")
    p.add_argument("--metric", choices=sorted(METRICS), default="dice")
    p.add_argument("--alpha", type=_alpha, default=0.05, help="significance level (default 0.05)")
    add_margin(p)
    p.add_argument("--region", help="only this region (default: every region, averaged within each test subject)")
    p.add_argument("--few-shot", type=int, help="only this few-shot K (default: every K, each its own setting)")
    p.add_argument("--suite", action="append", help="only the settings this suite ran (repeatable)")
    p.add_argument("--dataset", action="append", help="only this dataset (repeatable)")
    p.add_argument("--method", action="append", help="only this method or variant, plus control and scratch")
    p.add_argument("--include-smoke", action="store_true", help="also analyse smoke runs (runner's --steps)")
    p.add_argument(
        "--strict", action="store_true", help="refuse a store with a damaged cell file (default: skip it, warn)"
    )
    p.add_argument(
        "--power-delta", type=_positive, default=0.02, help="difference the power table is computed for (0.02)"
    )
    return p


def _resolve(name: str | None, default: str, variants: list[str], option: str) -> str | None:
    """An explicitly named method must exist; a missing default only switches its tables off."""
    if name is not None:
        return resolve_variant(name, variants, option)
    try:
        return resolve_variant(default, variants, option)
    except LeaderboardError:
        return None


def build(args: argparse.Namespace) -> Report:
    """Read the store, compute everything, then write every output file into ``args.out``."""
    if args.out.exists() and not args.out.is_dir():
        raise LeaderboardError(f"--out {args.out}: exists and is not a folder")
    df, options, dropped = selected(args)
    for line in df.attrs["skipped"]:
        print(line, file=sys.stderr)
    report = analyse(df, options, include_smoke=args.include_smoke, dropped=dropped)
    estimates = estimators.estimator_report(args.results, df, options, args.include_smoke)
    for line in estimates.notes:
        if line.startswith("warning:"):
            print(line, file=sys.stderr)
    publish(report, args.out, estimates)
    return report


def selected(args: argparse.Namespace) -> tuple[pd.DataFrame, Options, dict[str, int]]:
    """The store's rows the command's filters keep, its resolved options, and what the filters left out
    (``settings.left_out``); the run summary computes its verdicts from the same call."""
    df = load_store(args.results, strict=args.strict)
    variants = sorted(df["variant"].unique())
    control = _resolve(args.control, "finetune", variants, "--control")
    scratch = _resolve(args.scratch, "scratch", variants, "--scratch")
    methods = args.method and [*args.method, *(v for v in (control, scratch) if v)]
    dropped = left_out(df, args.include_smoke)
    df = select(df, suites=args.suite, datasets=args.dataset, methods=methods, include_smoke=args.include_smoke)
    ok = df["status"] == "ok"
    if args.region is not None:
        regions = sorted(df.loc[ok, "region"].unique())
        if args.region not in regions:
            raise LeaderboardError(f"--region {args.region}: not in the store (has {', '.join(regions)})")
        df = df[~ok | (df["region"] == args.region)]
    if args.few_shot is not None:
        shots = sorted(df.loc[ok, "few_shot"].unique())
        if args.few_shot not in shots:
            raise LeaderboardError(f"--few-shot {args.few_shot}: not in the store (has {', '.join(map(str, shots))})")
        df = df[df["few_shot"] == args.few_shot]
    options = Options(
        metric=args.metric,
        alpha=args.alpha,
        control=control,
        scratch=scratch,
        power_delta=args.power_delta,
        margin=args.margin,
    )
    return df, options, dropped


def publish(report: Report, out: Path, estimates: estimators.EstimatorReport | None = None) -> None:
    """Write every output into a temporary folder next to ``out``, then move it into place.

    A failure leaves no ``out`` behind (and an existing ``out`` unchanged).
    """
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
        staging.chmod(umask_mode(directory=True))  # mkdtemp's 0700 would make the site owner-only
    except OSError as exc:
        raise LeaderboardError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from exc
    try:
        write_outputs(report, staging, estimates)
        if not out.exists():
            os.replace(staging, out)
            return
        for pattern in OUTPUT_PATTERNS:
            for stale in out.glob(pattern):
                stale.unlink()
        for path in staging.iterdir():
            os.replace(path, out / path.name)
    except OSError as exc:
        raise LeaderboardError(f"--out {out}: cannot write ({exc.strerror or exc})") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _json_safe(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item"):
        return _json_safe(value.item())
    return value


def write_outputs(report: Report, out: Path, estimates: estimators.EstimatorReport | None = None) -> None:
    """Write the CSV/JSON tables, Markdown, LaTeX, figures and the HTML page (with the estimator section)."""
    report.comparisons.to_csv(out / "comparisons.csv", index=False)
    report.negative_transfer.to_csv(out / "negative_transfer.csv", index=False)
    report.power.to_csv(out / "power.csv", index=False)
    dial_rows = dial.dial_table(report.negative_transfer)
    if not dial_rows.empty:
        dial_rows.to_csv(out / "dial.csv", index=False)
    summaries = [sr.summary.assign(setting=sr.setting) for sr in report.settings]
    table = pd.concat(summaries, ignore_index=True) if summaries else pd.DataFrame()
    table.to_csv(out / "leaderboard.csv", index=False)
    omnibus: dict = {"settings": {sr.setting: sr.omnibus for sr in report.settings}}
    if not report.transferability.empty:
        report.transferability.to_csv(out / "transferability.csv", index=False)
        omnibus["transferability_kendall"] = report.kendall.to_dict(orient="records")
    (out / "omnibus.json").write_text(json.dumps(_json_safe(omnibus), indent=2) + "\n")
    if estimates is not None:
        estimators.write_csvs(estimates, out)
    extra = estimators.markdown(estimates, report.options) if estimates is not None else ""
    (out / "leaderboard.md").write_text(to_markdown(report) + extra)
    (out / "leaderboard.tex").write_text(to_latex([setting_table(report, sr) for sr in report.settings]))
    (out / "index.html").write_text(page(report, _figures(report, out), estimates))


def _figures(report: Report, out: Path) -> dict[str, Path]:
    from leaderboard import figures  # matplotlib: not for the run summary, which imports this module

    opts = report.options
    label = METRIC_LABELS[opts.metric]
    made: dict[str, Path] = {}
    for i, sr in enumerate(report.settings, start=1):
        o = sr.omnibus
        if not o["draw_cd"]:
            continue
        made[f"cd_diagram_{i}"] = out / f"cd_diagram_{i}.png"
        figures.cd_diagram(
            pd.Series(o["mean_ranks"], dtype=float),
            o["nemenyi_cd"],
            made[f"cd_diagram_{i}"],
            f"{sr.setting}\n{label}: mean ranks over N = {o['N']} test subjects ({o['n_seeds']} seeds); "
            f"bars join methods not significantly different (Nemenyi, α = {opts.alpha:g})",
        )
    for j, (group, curve) in enumerate(report.learning_curves, start=1):
        if curve.empty:
            continue
        variants = sorted(curve["method"].unique())
        made[f"learning_curve_{j}"] = out / f"learning_curve_{j}.png"
        figures.learning_curve_plot(
            curve,
            variants,
            figures.palette(variants, opts.scratch),
            label,
            f"{group}: {label} vs few-shot K\n({round(100 * (1 - opts.alpha))}% crossed-model CI; "
            f"{curve['n_seeds'].min()} seeds)",
            made[f"learning_curve_{j}"],
        )
    for j, (group, curve) in enumerate(dial.curves(dial.dial_table(report.negative_transfer)), start=1):
        made[f"dial_{j}"] = out / f"dial_{j}.png"
        figures.dial_plot(
            curve,
            figures.palette(sorted(curve["method"].unique()), None),
            f"{label}: method − {opts.scratch}",
            f"{group}\n({round(100 * (1 - opts.alpha))}% crossed-model CI; {curve['level'].nunique()} levels)",
            made[f"dial_{j}"],
        )
    return made


def _summary(report: Report) -> str:
    opts = report.options
    p = report.provenance
    lines = [
        f"leaderboard: {len(report.settings)} setting(s), {len(report.tuning)} method(s), {p['n_cells']} cells "
        f"({p['n_failed_cells']} failed, {len(p['missing'])} missing)"
    ]
    for sr in report.settings:
        s = sr.summary
        n_seeds = int(s["n_seeds"].min()) if not s.empty else 0
        n_units = int(s.loc[s["scope"] == sr.scopes[-1].name, "n_units"].max()) if not s.empty else 0
        lines.append(f"  {sr.setting}: {n_units} test subjects, {n_seeds} seeds, suites {', '.join(sr.suites)}")
    if len(report.tuning) == 1:
        lines.append(f"only one method ({next(iter(report.tuning))}): nothing to compare")
    elif report.comparisons.empty:
        lines.append(f"no comparisons: no result of control '{opts.control or 'finetune'}' here (use --control)")
    if report.negative_transfer.empty:
        lines.append("no negative-transfer table: no scratch result to compare with (use --scratch)")
    if report.without_results:
        lines.append(f"no successful result (left out): {', '.join(report.without_results)}")
    if report.coverage["smoke_cells"]:
        lines.append(f"{report.coverage['smoke_cells']} smoke-run cell(s) left out (--include-smoke)")
    lines += report.notes
    if len(p["code_versions"]) > 1:
        lines.append("warning: the store mixes code versions")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the command; bad input gives a one-line error and exit status 2."""
    args = parser().parse_args(argv)
    try:
        report = build(args)
    except LeaderboardError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    print(_summary(report))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
