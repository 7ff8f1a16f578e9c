"""The leaderboard's tables as plain cells, and their Markdown and LaTeX (booktabs) renderings."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import pandas as pd

from leaderboard.analysis import Report
from leaderboard.stats import MIN_SEEDS

METRIC_LABELS = {"dice": "Dice", "hd95": "HD95 (mm)"}


@dataclass(frozen=True)
class Cell:
    """One table cell: text (may contain a newline), optionally bold and/or with a dagger."""

    text: str
    bold: bool = False
    dagger: bool = False


@dataclass
class Table:
    """A titled table with sentences to print under it."""

    title: str
    headers: list[str]
    rows: list[list[Cell]]
    notes: list[str] = field(default_factory=list)


def _value(x: float, metric: str) -> str:
    return "–" if pd.isna(x) else f"{x:.3f}" if metric == "dice" else f"{x:.2f}"


def _signed(x: float, metric: str) -> str:
    return "–" if pd.isna(x) else f"{x:+.3f}" if metric == "dice" else f"{x:+.2f}"


def _p(p: float, note: str) -> str:
    if pd.isna(p):
        return "n too small" if "n too small:" in note else "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _shots(few_shot: int) -> str:
    return str(few_shot) if few_shot else "all"


def _arrow(transfer: str) -> str:
    return transfer.replace("->", " → ")


def direction(report: Report) -> str:
    """``higher is better`` or ``lower is better`` for the report's metric."""
    return "higher is better" if report.options.higher_is_better else "lower is better"


def _label(report: Report, variant: str) -> str:
    role = {report.options.control: "control", report.options.scratch: "no transfer"}.get(variant)
    return f"{variant} ({role})" if role else variant


def _significant(report: Report) -> set[tuple[str, str]]:
    c = report.comparisons
    hits = c[(c["p_holm"] < report.options.alpha) & c["seeds_ok"].astype(bool)]
    return set(zip(hits["method"], hits["scope"]))


def seeds_label(report: Report) -> str:
    """Seeds behind the blocks: ``5``, or ``4–5`` when a failed or missing cell cost a target task seeds."""
    low, high = report.n_seeds, report.max_seeds
    return f"{low}" if low == high else f"{low}–{high}"


def seed_warning(n_seeds: int) -> str:
    """The sentence every table carries when too few seeds stand behind it."""
    return (
        f"Only {n_seeds} seed(s): test subjects of one seed share one model, so these results cannot "
        f"establish a difference between methods (at least {MIN_SEEDS} seeds are needed); "
        "no † is given and every verdict is inconclusive."
    )


def leaderboard_table(report: Report) -> Table:
    """One row per method, one column per target task (and all), mean ± std, best bold, † vs control."""
    opts, lb = report.options, report.leaderboard
    scopes = list(report.tasks) + (["all"] if len(report.tasks) > 1 else [])
    stats_by_scope = {task: lb[lb["target_task"] == task].set_index("method") for task in report.tasks}
    stats_by_scope["all"] = report.overall
    pick = max if opts.higher_is_better else min
    best = {s: _value(pick(stats_by_scope[s]["mean"]), opts.metric) for s in scopes}
    best_rank = f"{report.overall['mean_rank'].min():.2f}"
    significant = _significant(report)
    headers = ["Method"]
    for scope in scopes:
        n = int(stats_by_scope[scope]["n_blocks"].iloc[0])
        headers.append(f"All\nn={n}" if scope == "all" else f"{scope}\n{report.tasks[scope]}, n={n}")
    headers.append("Mean rank")
    rows = []
    for variant in report.variants:
        row = [Cell(_label(report, variant))]
        for scope in scopes:
            s = stats_by_scope[scope].loc[variant]
            mean = _value(s["mean"], opts.metric)
            text = f"{mean} ± {_value(s['std'], opts.metric)}"
            row.append(Cell(text, bold=mean == best[scope], dagger=(variant, scope) in significant))
        rank = f"{report.overall.loc[variant, 'mean_rank']:.2f}"
        rows.append([*row, Cell(rank, bold=rank == best_rank)])
    return Table(f"Leaderboard: {METRIC_LABELS[opts.metric]} ({direction(report)})", headers, rows, _notes(report))


def _notes(report: Report) -> list[str]:
    opts = report.options
    notes = [
        f"Mean ± std over N = {report.n_blocks} blocks; a block is one (transfer, test subject, region) "
        f"with its seeds averaged ({seeds_label(report)} seeds); every method is compared on the same "
        "blocks. Bold: best per column. Mean rank: Friedman ranks, 1 = best."
    ]
    if opts.control in report.variants and len(report.variants) > 1:
        notes.append(
            f"†: differs from {opts.control} (two-sided Wilcoxon signed-rank test on blocks, Holm-corrected "
            f"per scope, α = {opts.alpha:g}, at least {MIN_SEEDS} seeds)."
        )
    elif len(report.variants) == 1:
        notes.append("Only one method: nothing to compare.")
    else:
        notes.append(f"No comparison: control '{opts.control}' is not among the methods compared here.")
    if report.n_seeds < MIN_SEEDS:
        notes.append(seed_warning(report.n_seeds))
    if report.comparisons["note"].str.contains("n too small").any():
        notes.append(
            f"n too small: the two-sided exact Wilcoxon test cannot reach α = {opts.alpha:g} on n ≤ "
            f"{_max_unreachable_n(opts.alpha)} non-zero blocks (its smallest p is 2/2^n), nor after Holm "
            "when m · 2/2^n > α; such rows say so instead of showing a p-value they cannot have."
        )
    dropped = {v: n for v, n in report.dropped_units.items() if n}
    if dropped:
        listed = ", ".join(f"{v} {n}" for v, n in dropped.items())
        notes.append(
            "Left out so that all methods share the same blocks (units = one seed of one block, which "
            f"another method lacks through a failed or missing cell): {listed}."
        )
    if report.without_results:
        notes.append(
            f"Not in the table, no successful result here: {', '.join(report.without_results)} "
            "(see failed and missing cells)."
        )
    if len(report.settings) > 1:
        pooled = "; ".join(
            f"{r.dataset}/{r.backbone}/K={_shots(r.few_shot)}/{r.target_steps} steps"
            for r in report.settings.itertuples()
        )
        notes.append(f"Blocks pool these settings (dataset/backbone/few-shot/budget): {pooled}.")
    versions = report.provenance["code_versions"]
    if len(versions) > 1:
        notes.append(f"Warning: this table mixes code versions ({', '.join(versions)}).")
    return notes


def _max_unreachable_n(alpha: float) -> int:
    return max(n for n in range(64) if 2.0 / 2.0**n > alpha)


def comparisons_table(report: Report) -> Table:
    """Each method minus the control: N, seeds, mean difference with CI, W, p, Holm p, effect size."""
    opts = report.options
    c = report.comparisons
    rows = [
        [
            Cell(r.method),
            Cell(r.scope),
            Cell(str(r.n_blocks)),
            Cell(str(r.n_seeds)),
            Cell(
                f"{_signed(r.mean_diff, opts.metric)} [{_signed(r.ci_low, opts.metric)}, "
                f"{_signed(r.ci_high, opts.metric)}]"
            ),
            Cell(f"{r.statistic:g}"),
            Cell(_p(r.p_value, r.note)),
            Cell(_p(r.p_holm, r.note), bold=bool(r.seeds_ok) and r.p_holm < opts.alpha),
            Cell(f"{r.effect_size:+.2f}"),
            Cell(r.note),
        ]
        for r in c.itertuples()
    ]
    level = round(100 * (1 - opts.alpha))
    headers = ["Method", "Scope", "N", "Seeds", f"Δ mean [{level}% CI]", "W", "p", "p (Holm)", "r_rb", "Note"]
    notes = [
        f"Δ = method − {opts.control} per block ({direction(report)}). CI: hierarchical bootstrap "
        f"(seeds, then test subjects within each seed; {opts.n_boot} resamples, seed {opts.bootstrap_seed}). "
        "p: two-sided Wilcoxon signed-rank test on the N blocks; Holm over the rows of each scope type "
        "(all / per target task). r_rb: matched-pairs rank-biserial correlation (Kerby 2014)."
    ]
    if report.n_seeds < MIN_SEEDS:
        notes.append(seed_warning(report.n_seeds))
    return Table(f"Comparisons with {opts.control}", headers, rows, notes)


def negative_transfer_table(report: Report) -> Table:
    """Each transfer method minus scratch per target task, with the verdict."""
    opts = report.options
    rows = [
        [
            Cell(r.method),
            Cell(r.target_task),
            Cell(r.transfer_type),
            Cell(str(r.n_blocks)),
            Cell(str(r.n_seeds)),
            Cell(
                f"{_signed(r.mean_diff, opts.metric)} [{_signed(r.ci_low, opts.metric)}, "
                f"{_signed(r.ci_high, opts.metric)}]"
            ),
            Cell(_p(r.p_value, r.note)),
            Cell(f"{r.effect_size:+.2f}"),
            Cell(r.verdict, bold=r.verdict != "inconclusive"),
        ]
        for r in report.negative_transfer.itertuples()
    ]
    level = round(100 * (1 - opts.alpha))
    headers = [
        "Method",
        "Target task",
        "Transfer type",
        "N",
        "Seeds",
        f"Δ vs scratch [{level}% CI]",
        "p",
        "r_rb",
        "Verdict",
    ]
    worse = "below" if opts.higher_is_better else "above"
    notes = [
        f"Δ = method − {opts.scratch} on the same target task, backbone, few-shot, budget, seeds and test "
        f"subjects. Verdict negative: the hierarchical-bootstrap {level}% CI of Δ lies {worse} 0 with at "
        f"least {MIN_SEEDS} seeds; positive: symmetrically; otherwise inconclusive. "
        "Unadjusted p for reference only."
    ]
    if report.negative_transfer["n_seeds"].min() < MIN_SEEDS:
        notes.append(seed_warning(int(report.negative_transfer["n_seeds"].min())))
    return Table(f"Negative transfer: transfer methods vs {opts.scratch}", headers, rows, notes)


def omnibus_sentence(report: Report) -> str:
    """Friedman, Iman-Davenport and Nemenyi CD in one sentence (or why they are absent)."""
    o = report.omnibus
    parts = []
    if o["friedman_chi2"] is not None:
        df1, df2 = o["iman_davenport_df"]
        parts.append(
            f"Friedman χ²({o['k'] - 1}) = {o['friedman_chi2']:.2f}, p = {o['friedman_p']:.2g}; "
            f"Iman–Davenport F({df1}, {df2}) = {o['iman_davenport_F']:.2f}, p = {o['iman_davenport_p']:.2g}"
        )
    if o["nemenyi_cd"] is not None:
        parts.append(
            f"Nemenyi CD = {o['nemenyi_cd']:.2f} mean ranks at α = {o['alpha']:g} "
            f"(q = {o['nemenyi_q_alpha']:.3f}, k = {o['k']}, N = {o['N']})"
        )
    if o["note"]:
        parts.append(o["note"])
    return "; ".join(parts) + "."


def transferability_table(report: Report) -> Table:
    """Per transfer: LEEP, NCE and the observed gain of the control over scratch."""
    opts = report.options
    rows = [
        [
            Cell(_arrow(r.transfer)),
            Cell(r.transfer_type),
            Cell(f"K={_shots(r.few_shot)}, {r.target_steps} steps"),
            Cell(str(r.n_blocks)),
            Cell(str(r.n_seeds)),
            Cell("–" if pd.isna(r.leep) else f"{r.leep:.3f}"),
            Cell("–" if pd.isna(r.nce) else f"{r.nce:.3f}"),
            Cell(_signed(r.gain, opts.metric)),
            Cell(r.verdict, bold=r.verdict != "inconclusive"),
        ]
        for r in report.transferability.itertuples()
    ]
    headers = [
        "Transfer",
        "Type",
        "Setting",
        "N",
        "Seeds",
        "LEEP",
        "NCE",
        f"Gain of {opts.control}",
        "Verdict",
    ]
    notes = [
        f"Gain: improvement of {opts.control} over {opts.scratch} ({METRIC_LABELS[opts.metric]}, positive = "
        "better), averaged over seeds and blocks; scores are averaged over the seeds' source models."
    ]
    return Table("Transferability scores", headers, rows, notes)


def kendall_table(report: Report) -> Table:
    """Kendall tau between each score and the observed gain, per transfer and per transfer × seed."""
    rows = [
        [
            Cell(r.level),
            Cell(r.score.upper()),
            Cell(str(r.n)),
            Cell("–" if math.isnan(r.tau) else f"{r.tau:+.2f}"),
            Cell(_p(r.p_value, r.note)),
        ]
        for r in report.transferability_tau.itertuples()
    ]
    notes = [
        "Do the scores predict the gain (and so negative transfer)? τ > 0: a higher score goes with a "
        "larger gain. The transfer × seed level pairs each seed's source model with its own gain; its "
        "points share transfers, so its p-value is optimistic.",
        *_score_verdicts(report),
    ]
    return Table("Kendall τ: transferability score vs observed gain", ["Level", "Score", "n", "τ", "p"], rows, notes)


def _score_verdicts(report: Report) -> list[str]:
    """Whether the transfers judged negative are exactly those the score ranks lowest."""
    t = report.transferability
    negative = set(t.index[t["verdict"] == "negative"])
    if not negative:
        return [f"No transfer shows negative transfer of {report.options.control}: there is none to predict."]
    sentences = []
    for score in ("leep", "nce"):
        ranked = t[score].dropna().sort_values()
        if len(ranked) == len(t):
            verb = "are" if set(ranked.index[: len(negative)]) == negative else "are not"
            sentences.append(
                f"{score.upper()}: the {len(negative)} transfer(s) judged negative {verb} the "
                f"{len(negative)} with the lowest {score.upper()} (of {len(t)} transfers)."
            )
    return sentences


def _cell_identity(row: tuple) -> list[Cell]:
    """Method, transfer, seed and few-shot size of a cell row (the first columns of the cell tables)."""
    return [Cell(row.variant), Cell(_arrow(row.transfer)), Cell(str(row.seed)), Cell(_shots(row.few_shot))]


def failed_table(report: Report) -> Table:
    """Failed cells with their reasons."""
    f = report.provenance["failed"]
    rows = [[*_cell_identity(r), Cell(r.error)] for r in f.itertuples()]
    return Table(f"Failed cells ({len(f)})", ["Method", "Transfer", "Seed", "Few-shot", "Reason"], rows)


def missing_table(report: Report) -> Table:
    """Cells that other methods have and a method lacks."""
    m = report.provenance["missing"]
    rows = [[*_cell_identity(r), Cell(str(r.target_steps))] for r in m.itertuples()]
    return Table(f"Missing cells ({len(m)})", ["Method", "Transfer", "Seed", "Few-shot", "Steps"], rows)


def provenance_lines(report: Report) -> list[str]:
    """Counts, versions, devices and dates of the store."""
    p = report.provenance

    def listing(counts: dict) -> str:
        return ", ".join(f"{k or '?'} ({v} cells)" for k, v in counts.items())

    lines = [
        f"Cells: {p['n_cells']} ({p['n_ok_cells']} ok, {p['n_failed_cells']} failed, {len(p['missing'])} missing)",
        f"Code versions: {listing(p['code_versions'])}"
        + (" — MIXED: results come from different code" if len(p["code_versions"]) > 1 else ""),
        f"Torch versions: {listing(p['torch_versions'])}",
        f"Devices: {listing(p['devices'])}",
        f"Created: {p['created_first']} … {p['created_last']}",
    ]
    if not p["duplicates"].empty:
        lines.append(f"Configurations run under several cell keys (averaged): {len(p['duplicates'])}")
    return lines


def report_tables(report: Report) -> list[Table]:
    """The result tables in page order (those that apply to this store)."""
    tables = [leaderboard_table(report)]
    if not report.comparisons.empty:
        tables.append(comparisons_table(report))
    if not report.negative_transfer.empty:
        tables.append(negative_transfer_table(report))
    if not report.transferability.empty:
        tables += [transferability_table(report), kendall_table(report)]
    return tables


_NUMERIC = re.compile(r"[\d\s.,±+\-–<>\[\]]+|–|n too small")


def numeric_columns(table: Table) -> list[bool]:
    """Per column: whether every body cell holds a number (right-aligned) rather than text."""
    return [
        i > 0 and all(_NUMERIC.fullmatch(row[i].text) for row in table.rows if row[i].text)
        for i in range(len(table.headers))
    ]


def _md_cell(cell: Cell) -> str:
    text = cell.text.replace("|", "\\|").replace("\n", "<br>") + ("†" if cell.dagger else "")
    return f"**{text}**" if cell.bold and text else text


def markdown_table(table: Table) -> str:
    """A GitHub-flavoured Markdown table with its title and notes."""
    lines = [f"## {table.title}", ""]
    if table.rows:
        lines.append("| " + " | ".join(_md_cell(Cell(h)) for h in table.headers) + " |")
        lines.append("|" + "|".join("---:" if n else ":---" for n in numeric_columns(table)) + "|")
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    else:
        lines.append("_none_")
    return "\n".join(lines + [""] + [f"{note}\n" for note in table.notes])


def to_markdown(report: Report) -> str:
    """The whole leaderboard as one Markdown document."""
    parts = [f"# ntbench leaderboard — {METRIC_LABELS[report.options.metric]}", ""]
    parts += [markdown_table(t) for t in report_tables(report)]
    parts += ["## Omnibus test", "", omnibus_sentence(report), "", "## Provenance", ""]
    parts += [f"- {line}" for line in provenance_lines(report)] + [""]
    parts += [markdown_table(failed_table(report)), markdown_table(missing_table(report))]
    return "\n".join(parts)


_TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_TEX_SYMBOLS = {
    "±": r"$\pm$",
    "→": r"$\rightarrow$",
    "->": r"$\rightarrow$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "α": r"$\alpha$",
    "χ²": r"$\chi^2$",
    "−": "--",
    "–": "--",
    "†": r"$^\dagger$",
    "·": r"$\cdot$",
    "×": r"$\times$",
    "Δ": r"$\Delta$",
    "τ": r"$\tau$",
    "…": r"\ldots{}",
    "<": r"$<$",
    ">": r"$>$",
}


def tex_escape(text: str) -> str:
    """Escape LaTeX specials and map the few Unicode symbols the tables use."""
    text = re.sub(r"[\\&%$#_{}~^]", lambda m: _TEX_ESCAPES[m.group()], text)
    for symbol, tex in _TEX_SYMBOLS.items():
        text = text.replace(symbol, tex)
    return text


def _tex_cell(cell: Cell) -> str:
    text = tex_escape(cell.text)
    text = rf"\textbf{{{text}}}" if cell.bold else text
    return text + (r"$^\dagger$" if cell.dagger else "")


def to_latex(table: Table) -> str:
    """A booktabs table environment (needs \\usepackage{booktabs}); notes become the caption."""
    heads = [h.split("\n") for h in table.headers]
    depth = max(len(h) for h in heads)
    header_rows = [" & ".join(tex_escape(h[i]) if i < len(h) else "" for h in heads) + r" \\" for i in range(depth)]
    body = [" & ".join(_tex_cell(c) for c in row) + r" \\" for row in table.rows]
    caption = tex_escape(" ".join([table.title + "."] + table.notes))
    return "\n".join(
        [
            "% Requires \\usepackage{booktabs}.",
            r"\begin{table}[t]",
            r"\centering",
            rf"\caption{{{caption}}}",
            r"\label{tab:ntbench-leaderboard}",
            r"\begin{tabular}{l" + "c" * (len(table.headers) - 2) + "r}",
            r"\toprule",
            *header_rows,
            r"\midrule",
            *body,
            r"\bottomrule",
            r"\end{tabular}",
            r"\end{table}",
            "",
        ]
    )
