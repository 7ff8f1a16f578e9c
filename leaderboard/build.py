"""``python -m leaderboard.build --results DIR --out DIR2``: tables, figures and a page from a store."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from leaderboard import figures
from leaderboard.analysis import Options, Report, analyse, resolve_variant
from leaderboard.blocks import METRICS
from leaderboard.errors import LeaderboardError
from leaderboard.html import page
from leaderboard.stats import MIN_SEEDS
from leaderboard.store import load_store
from leaderboard.tables import METRIC_LABELS, direction, leaderboard_table, seeds_label, to_latex, to_markdown

PROG = "python -m leaderboard.build"


class _OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _alpha(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1), got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = _OneLineParser(prog=PROG, description=__doc__)
    p.add_argument("--results", type=Path, required=True, help="results folder (all *.parquet under it)")
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument("--control", help="method every other is compared with (default: finetune)")
    p.add_argument("--scratch", help="no-transfer reference for negative transfer (default: scratch)")
    p.add_argument("--metric", choices=sorted(METRICS), default="dice")
    p.add_argument("--alpha", type=_alpha, default=0.05, help="significance level (default 0.05)")
    p.add_argument("--region", help="only this region (default: every region, each a block)")
    p.add_argument("--few-shot", type=int, help="only this few-shot K for the tables (default: all, pooled)")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap (default 0)")
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
    """Read the store, compute everything and write every output file into ``args.out``."""
    df = load_store(args.results)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LeaderboardError(f"--out {args.out}: cannot create the folder ({exc.strerror or exc})") from exc
    ok = df["status"] == "ok"
    if args.region is not None:
        regions = sorted(df.loc[ok, "region"].unique())
        if args.region not in regions:
            raise LeaderboardError(f"--region {args.region}: not in the store (has {', '.join(regions)})")
        df = df[~ok | (df["region"] == args.region)]
    if args.few_shot is not None and args.few_shot not in set(df.loc[ok, "few_shot"]):
        shots = ", ".join(str(k) for k in sorted(df.loc[ok, "few_shot"].unique()))
        raise LeaderboardError(f"--few-shot {args.few_shot}: not in the store (has {shots})")
    if args.n_boot < 100:
        raise LeaderboardError(f"--n-boot {args.n_boot}: use at least 100 resamples")
    variants = sorted(df["variant"].unique())
    options = Options(
        metric=args.metric,
        alpha=args.alpha,
        control=_resolve(args.control, "finetune", variants, "--control"),
        scratch=_resolve(args.scratch, "scratch", variants, "--scratch"),
        few_shot=args.few_shot,
        n_boot=args.n_boot,
        bootstrap_seed=args.bootstrap_seed,
    )
    report = analyse(df, options)
    try:
        write_outputs(report, args.out)
    except OSError as exc:
        raise LeaderboardError(f"--out {args.out}: cannot write ({exc.strerror or exc})") from exc
    return report


def _json_safe(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def write_outputs(report: Report, out: Path) -> None:
    """Write the CSV/JSON tables, Markdown, LaTeX, figures and the HTML page."""
    report.leaderboard.to_csv(out / "leaderboard.csv", index=False)
    report.comparisons.to_csv(out / "comparisons.csv", index=False)
    report.negative_transfer.to_csv(out / "negative_transfer.csv", index=False)
    omnibus = dict(report.omnibus)
    if not report.transferability.empty:
        report.transferability.to_csv(out / "transferability.csv", index=False)
        omnibus["transferability_kendall"] = report.transferability_tau.to_dict(orient="records")
    (out / "omnibus.json").write_text(json.dumps(_json_safe(omnibus), indent=2) + "\n")
    (out / "leaderboard.md").write_text(to_markdown(report))
    (out / "leaderboard.tex").write_text(to_latex(leaderboard_table(report)))
    for stale in ("cd_diagram.png", "gains.png", "learning_curve.png"):
        (out / stale).unlink(missing_ok=True)
    made = _figures(report, out)
    (out / "index.html").write_text(page(report, made))


def _figures(report: Report, out: Path) -> dict[str, Path]:
    opts = report.options
    label = METRIC_LABELS[opts.metric]
    colours = figures.palette(report.variants, opts.scratch)
    made: dict[str, Path] = {}
    level = round(100 * (1 - opts.alpha))
    caveat = f"; not conclusive: fewer than {MIN_SEEDS} seeds" if report.n_seeds < MIN_SEEDS else ""
    if report.omnibus["nemenyi_cd"] is not None:
        made["cd_diagram"] = out / "cd_diagram.png"
        figures.cd_diagram(
            report.overall["mean_rank"],
            report.omnibus["nemenyi_cd"],
            made["cd_diagram"],
            f"{label}: mean ranks over N = {report.n_blocks} blocks ({seeds_label(report)} seeds{caveat})\n"
            f"bars join methods not significantly different (Nemenyi, α = {opts.alpha:g})",
        )
    if not report.gains.empty:
        made["gains"] = out / "gains.png"
        figures.gains_plot(
            report.gains,
            report.variants,
            colours,
            f"Δ {label} vs {opts.control}",
            f"Per-block difference to {opts.control} ({direction(report)})\n"
            f"N = {report.n_blocks} blocks, {seeds_label(report)} seeds averaged per block{caveat}",
            made["gains"],
        )
    if not report.learning_curve.empty:
        curve_seeds = report.learning_curve["n_seeds"].min()
        made["learning_curve"] = out / "learning_curve.png"
        figures.learning_curve_plot(
            report.learning_curve,
            report.variants,
            colours,
            label,
            f"{label} vs few-shot K: mean over the blocks all methods share at each K\n"
            f"({level}% hierarchical-bootstrap CI; {curve_seeds} seeds"
            + (": not conclusive)" if curve_seeds < MIN_SEEDS else ")"),
            made["learning_curve"],
        )
    return made


def _summary(report: Report) -> str:
    opts = report.options
    p = report.provenance
    lines = [
        f"leaderboard: {len(report.variants)} method(s), N = {report.n_blocks} blocks, {seeds_label(report)} "
        f"seeds, {p['n_cells']} cells ({p['n_failed_cells']} failed, {len(p['missing'])} missing)"
    ]
    if len(report.variants) == 1:
        lines.append(f"only one method ({report.variants[0]}): nothing to compare")
    elif report.comparisons.empty:
        lines.append(f"no comparisons: no result of control '{opts.control or 'finetune'}' here (use --control)")
    if report.negative_transfer.empty:
        lines.append("no negative-transfer table: no scratch result to compare with (use --scratch)")
    if report.without_results:
        lines.append(f"no successful result (left out): {', '.join(report.without_results)}")
    if report.n_seeds < MIN_SEEDS:
        lines.append(f"only {report.n_seeds} seed(s): the results cannot establish a difference")
    if len(report.provenance["code_versions"]) > 1:
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
