"""The leaderboard's tables as plain data (title, headers, cells, notes); ``leaderboard.render`` prints them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from leaderboard.analysis import Report, SettingReport
from leaderboard.stats import MIN_KENDALL_N, MIN_SEEDS

METRIC_LABELS = {"dice": "Dice", "hd95": "HD95 (mm)"}
DIFFERS = ("better", "worse", "positive", "negative")  # verdicts that a † marks (not equivalent, not inconclusive)


@dataclass(frozen=True)
class TableCell:
    """One table cell: text (may contain a newline), optionally bold and/or with a dagger."""

    text: str
    bold: bool = False
    dagger: bool = False


@dataclass
class Table:
    """A titled table with sentences to print under it."""

    title: str
    headers: list[str]
    rows: list[list[TableCell]]
    notes: list[str] = field(default_factory=list)


def _value(x: float, metric: str) -> str:
    return "–" if pd.isna(x) else f"{x:.3f}" if metric == "dice" else f"{x:.2f}"


def _signed(x: float, metric: str) -> str:
    return "–" if pd.isna(x) else f"{x:+.3f}" if metric == "dice" else f"{x:+.2f}"


def _p(p: float) -> str:
    return "–" if pd.isna(p) else "<0.001" if p < 0.001 else f"{p:.3f}"


def _arrow(transfer: str) -> str:
    return transfer.replace("->", " → ")


def _shots(few_shot: int) -> str:
    return str(few_shot) if few_shot else "all"


def direction(report: Report) -> str:
    """``higher is better`` or ``lower is better`` for the report's metric."""
    return "higher is better" if report.options.higher_is_better else "lower is better"


def _label(report: Report, variant: str) -> str:
    role = {report.options.control: "control", report.options.scratch: "no transfer"}.get(variant)
    return f"{variant} ({role})" if role else variant


def _of(frame: pd.DataFrame, setting: str) -> pd.DataFrame:
    return frame[frame["setting"] == setting] if not frame.empty else frame


def seed_warning(n_seeds: int) -> str:
    """The sentence every table carries when too few seeds stand behind it."""
    return (
        f"Only {n_seeds} seed(s): test subjects of one seed share one model, so these results cannot "
        f"establish a difference between methods (at least {MIN_SEEDS} seeds are needed); "
        "no † is given and every verdict is inconclusive."
    )


def coverage_lines(report: Report) -> list[str]:
    """Which data, suites, few-shot sizes and budgets the page covers, and what it left out."""
    c = report.coverage
    lines = [
        f"Covers datasets {', '.join(c['datasets'])}; suites {', '.join(c['suites'])}; few-shot K "
        f"{', '.join(_shots(k) for k in c['few_shot'])}; target budgets {', '.join(map(str, c['target_steps']))} "
        f"steps: {c['n_settings']} setting(s), each its own table, never pooled."
    ]
    if c["smoke_cells"]:
        lines.append(
            f"{c['smoke_cells']} smoke-run cell(s) (made with the runner's --steps) are left out of every table "
            "and verdict; --include-smoke shows them as their own settings."
        )
    if c["non_test_rows"]:
        lines.append(f"{c['non_test_rows']} validation or tuning-trial row(s) are left out: tables use the test split.")
    if report.without_results:
        lines.append(
            f"Not in the tables, no successful result here: {', '.join(report.without_results)} "
            "(see the failed and missing cells)."
        )
    lines += [n[0].upper() + n[1:] + "." for n in report.notes]
    return lines


def methods_table(report: Report) -> Table:
    """Each method and whether its settings were tuned."""
    rows = [[TableCell(_label(report, v)), TableCell(report.tuning[v])] for v in sorted(report.tuning)]
    return Table(
        "Methods",
        ["Method", "Settings"],
        rows,
        [
            "default: the method's default parameters; tuned, N trials: chosen by N tuning trials "
            "on the validation split."
        ],
    )


def scope_text(name: str, level: str) -> str:
    """A scope as the tables print it: ``t2-GM → t1-GM``, ``t1-GM, pooled`` or ``all, pooled``."""
    return _arrow(name) if level == "transfer" else f"{name}, pooled"


def setting_table(report: Report, sr: SettingReport) -> Table:
    """One row per method, one column per scope of the comparisons: mean ± std over units, best bold, † vs control."""
    opts, summary = report.options, sr.summary
    by_scope = {s.name: summary[summary["scope"] == s.name].set_index("method") for s in sr.scopes}
    pick = max if opts.higher_is_better else min
    best = {name: _value(pick(part["mean"]), opts.metric) for name, part in by_scope.items() if not part.empty}
    c = _of(report.comparisons, sr.setting)
    differs = c["verdict"].isin(DIFFERS)
    marked = set(zip(c.loc[differs, "method"], c.loc[differs, "scope"]))
    headers = ["Method"]
    for scope in sr.scopes:
        part = by_scope[scope.name]
        n = f"n={int(part['n_units'].iloc[0])}, {int(part['n_seeds'].min())} seeds" if not part.empty else "n=0"
        pooled = {"target": f"{len(scope.transfers)} transfers", "all": "all target tasks"}.get(scope.level)
        headers.append(f"{scope_text(scope.name, scope.level)}\n{pooled or sr.types[scope.name]}, {n}")
    headers.append("Mean rank")
    ranks = sr.omnibus["mean_ranks"]
    best_rank = f"{min(ranks.values()):.2f}" if ranks else ""
    rows = []
    for variant in sr.variants:
        row = [TableCell(_label(report, variant))]
        for scope in sr.scopes:
            if variant not in by_scope[scope.name].index:
                row.append(TableCell("–"))
                continue
            s = by_scope[scope.name].loc[variant]
            mean = _value(s["mean"], opts.metric)
            text = f"{mean} ± {_value(s['std'], opts.metric)}"
            row.append(TableCell(text, bold=mean == best.get(scope.name), dagger=(variant, scope.name) in marked))
        rank = f"{ranks[variant]:.2f}" if variant in ranks else "–"
        rows.append([*row, TableCell(rank, bold=rank == best_rank)])
    widest = scope_text(sr.scopes[-1].name, sr.scopes[-1].level)
    notes = [
        "Mean ± std over units: a unit is one test subject, its regions and transfers averaged within each seed, "
        "then its seeds averaged; methods are compared on the units and seeds they all have. Columns: each "
        "transfer, then a target task's transfers pooled and all target tasks pooled (a pooled column holds the "
        "methods run on each of its transfers). Bold: best per column. Mean rank: Friedman ranks over the units "
        f"of {widest}, 1 = best. Suites: {', '.join(sr.suites)}."
    ]
    if opts.control in sr.variants and len(sr.variants) > 1:
        notes.append(
            f"†: differs from {opts.control} in that column's row of the comparisons (crossed seed × subject "
            f"model, Holm within its family, α = {opts.alpha:g}, at least {MIN_SEEDS} seeds)."
        )
    n_seeds = int(summary["n_seeds"].min()) if not summary.empty else 0
    if n_seeds < MIN_SEEDS:
        notes.append(seed_warning(n_seeds))
    notes += sr.notes
    return Table(f"{sr.setting}: {METRIC_LABELS[opts.metric]} ({direction(report)})", headers, rows, notes)


def equivalence_on(report: Report) -> bool:
    """Whether the report's verdicts include ``equivalent`` (the margin is a Dice difference: not for HD95)."""
    return report.options.metric == "dice"


def _comparison_rows(frame: pd.DataFrame, metric: str, tost: bool) -> list[list[TableCell]]:
    return [
        [
            TableCell(r.method),
            TableCell(scope_text(r.scope, r.level)),
            TableCell(r.transfer_type or "–"),
            TableCell(str(r.n_units)),
            TableCell(str(r.n_seeds)),
            TableCell(f"{_signed(r.mean_diff, metric)} [{_signed(r.ci_low, metric)}, {_signed(r.ci_high, metric)}]"),
            TableCell("–" if pd.isna(r.df) else f"{r.df:.1f}"),
            TableCell(_p(r.p_value)),
            TableCell(_p(r.p_holm), bold=r.verdict in DIFFERS),
            *(
                [
                    TableCell(f"[{_signed(r.tost_low, metric)}, {_signed(r.tost_high, metric)}]"),
                    TableCell(_p(r.p_tost_holm), bold=r.verdict == "equivalent"),
                ]
                if tost
                else []
            ),
            TableCell(r.verdict, bold=r.verdict != "inconclusive"),
            TableCell(r.note),
        ]
        for r in frame.itertuples()
    ]


def _comparison_headers(report: Report) -> list[str]:
    level = round(100 * (1 - report.options.alpha))
    return [
        "Method",
        "Scope",
        "Transfer type",
        "Units",
        "Seeds",
        f"Δ mean [{level}% CI]",
        "df",
        "p",
        "p (Holm)",
        *(
            [f"{round(100 * (1 - 2 * report.options.alpha))}% CI (TOST)", "p TOST (Holm)"]
            if equivalence_on(report)
            else []
        ),
        "Verdict",
        "Note",
    ]


MODEL_NOTE = (
    "Scope: one transfer, or pooled over a target task's transfers or over all target tasks. Units: test subjects "
    "(each counted once per scope); Δ is averaged within each (subject, seed) over the scope's regions, transfers "
    "and target tasks. CI and p: crossed random-effects model of the paired differences (seed and subject random), "
    "method-of-moments variance with a Satterthwaite t (Clark 1973; Satterthwaite 1946), so they cover new seeds "
    "and new test subjects; calibration in docs/statistics.md. Holm within the per-transfer rows of this table, "
    "and separately within its pooled rows (page footer); the CI is unadjusted."
)


def equivalence_note(report: Report) -> str:
    """What ``equivalent`` means on this page (or why HD95 never gets it)."""
    opts = report.options
    if not equivalence_on(report):
        return "No equivalent verdict for HD95: the practical-equivalence margin (--margin) is a Dice difference."
    level = round(100 * (1 - 2 * opts.alpha))
    return (
        f"equivalent: not significantly different, and the two one-sided tests (TOST, Schuirmann 1987) put the "
        f"difference within ±{opts.margin:g} Dice (--margin): the {level}% CI (TOST) of the same model lies inside "
        f"±{opts.margin:g}, at the Holm-adjusted level (p TOST (Holm) < α = {opts.alpha:g}, Holm within the same "
        f"families); at least {MIN_SEEDS} seeds. inconclusive: neither a difference nor equivalence is shown (too few "
        "seeds or units, or too much noise), which does not mean no effect."
    )


def comparisons_table(report: Report, sr: SettingReport) -> Table:
    """Each method minus the control in one setting."""
    opts = report.options
    notes = [f"Δ = method − {opts.control} ({direction(report)}). " + MODEL_NOTE, equivalence_note(report)]
    return Table(
        f"{sr.setting}: comparisons with {opts.control}",
        _comparison_headers(report),
        _comparison_rows(_of(report.comparisons, sr.setting), opts.metric, equivalence_on(report)),
        notes,
    )


def negative_transfer_table(report: Report, sr: SettingReport) -> Table:
    """Each transfer method minus scratch per target task in one setting, with the verdict."""
    opts = report.options
    worse = "below" if opts.higher_is_better else "above"
    notes = [
        f"Δ = method − {opts.scratch} on the same target task, seeds and test subjects; scratch is paired with "
        f"every transfer into its target task. Verdict negative: Holm p < α with Δ {worse} 0 and at least "
        f"{MIN_SEEDS} seeds; positive symmetrically; else equivalent or inconclusive (below). " + MODEL_NOTE,
        equivalence_note(report),
    ]
    return Table(
        f"{sr.setting}: negative transfer (vs {opts.scratch})",
        _comparison_headers(report),
        _comparison_rows(_of(report.negative_transfer, sr.setting), opts.metric, equivalence_on(report)),
        notes,
    )


def omnibus_sentence(sr: SettingReport) -> str:
    """Friedman, Iman-Davenport and Nemenyi CD in one sentence (or why they are absent)."""
    o = sr.omnibus
    parts = []
    if o["friedman_chi2"] is not None:
        test = f"Friedman χ²({o['k'] - 1}) = {o['friedman_chi2']:.2f}, p = {o['friedman_p']:.2g}"
        if o["iman_davenport_F"] is not None:
            df1, df2 = o["iman_davenport_df"]
            test += f"; Iman–Davenport F({df1}, {df2}) = {o['iman_davenport_F']:.2f}, p = {o['iman_davenport_p']:.2g}"
        parts.append(f"{test} over N = {o['N']} independent units (test subjects), {o['n_seeds']} seeds")
    if o["draw_cd"]:
        parts.append(
            f"Nemenyi CD = {o['nemenyi_cd']:.2f} mean ranks at α = {o['alpha']:g} "
            f"(q = {o['nemenyi_q_alpha']:.3f}, k = {o['k']}, N = {o['N']})"
        )
    if o["note"]:
        parts.append(o["note"])
    return "; ".join(parts) + "."


def cd_disagreements(report: Report, sr: SettingReport) -> list[str]:
    """Pairs (method vs control or scratch, widest scope) that the CD diagram and the verdict judge differently."""
    o, widest = sr.omnibus, sr.scopes[-1].name
    if not o["draw_cd"]:
        return []
    ranks, out = o["mean_ranks"], {}
    for table in (report.comparisons, report.negative_transfer):
        rows = _of(table, sr.setting)
        for r in rows[rows["scope"] == widest].itertuples():
            if r.method in ranks and r.control in ranks:
                separated = abs(ranks[r.method] - ranks[r.control]) >= o["nemenyi_cd"]
                if separated != (r.verdict in DIFFERS):  # a pair in both tables is named once
                    out.setdefault(frozenset((r.method, r.control)), f"{r.method} vs {r.control} ({r.verdict})")
    return sorted(out.values())


def cd_caption(report: Report, sr: SettingReport) -> str:
    """The CD diagram's caption, with why it and a pairwise verdict can disagree (and where they do here)."""
    pairs = cd_disagreements(report, sr)
    here = f" (here: {'; '.join(pairs)})" if pairs else ""
    return (
        "Critical-difference diagram (Demsar 2006): mean Friedman rank per method over the test subjects of "
        f"{scope_text(sr.scopes[-1].name, sr.scopes[-1].level)}; methods joined by a bar do not differ significantly "
        f"by the Nemenyi test. It can disagree with the verdicts below{here} because it ranks the methods within "
        "each test subject with the seeds averaged, treating these trained models as fixed, while a verdict tests "
        "the mean difference against the seed-to-seed spread of the models as well, with Holm's correction."
    )


def power_table(report: Report, sr: SettingReport) -> Table:
    """Seeds needed for 80% power against the control, from this store as a pilot."""
    p = _of(report.power, sr.setting)
    subject_columns = [c for c in p.columns if c.startswith("seeds@") and p[c].notna().any()] if not p.empty else []
    rows = [
        [
            TableCell(r["method"]),
            TableCell(f"{r['pilot_seeds']} × {r['pilot_units']}"),
            TableCell(f"{r['sd_seed']:.4f}"),
            TableCell(f"{r['sd_subject']:.4f}"),
            TableCell(f"{r['sd_resid']:.4f}"),
            TableCell(f"{r['power_now']:.2f}"),
            *[TableCell("–" if pd.isna(r[c]) else str(int(r[c]))) for c in subject_columns],
        ]
        for r in p.to_dict("records")
    ]
    headers = ["Method", "Pilot seeds × units", "SD seed", "SD subject", "SD residual", "Power now"]
    headers += [f"Seeds for 80%\n{c.split('@')[1]} subjects" for c in subject_columns]
    notes = [
        f"Power to detect a true mean difference of {report.options.power_delta:g} to {report.options.control} "
        "with this page's test, from variance components estimated on this store as a pilot (crossed model, "
        "negative components set to 0), at the unadjusted α (Holm over many rows needs more); – = more than "
        "50 seeds. Other differences: python -m leaderboard.power "
        "--results R --control C --delta D."
    ]
    return Table(f"{sr.setting}: power", headers, rows, notes)


def transferability_table(report: Report) -> Table:
    """Per (setting, transfer): every score column and the observed gain of the control over scratch."""
    opts, t = report.options, report.transferability
    scores = [c for c in t.columns if c not in ("setting", "transfer", "transfer_type", "n_units", "n_seeds", "gain")]
    rows = [
        [
            TableCell(r["setting"]),
            TableCell(_arrow(r["transfer"])),
            TableCell(r["transfer_type"]),
            TableCell(str(r["n_units"])),
            TableCell(str(r["n_seeds"])),
            *[TableCell("–" if pd.isna(r[s]) else f"{r[s]:+.3f}") for s in scores],
            TableCell(_signed(r["gain"], opts.metric)),
        ]
        for r in t.to_dict("records")
    ]
    headers = ["Setting", "Transfer", "Type", "Units", "Seeds", *[s.upper().replace("_", " ") for s in scores]]
    headers.append(f"Gain of {opts.control}")
    notes = [
        f"Gain: {opts.control} − {opts.scratch} ({METRIC_LABELS[opts.metric]}, positive = better), averaged over "
        "units and seeds; scores are averaged over the seeds' source models. Every numeric column a method "
        "returns per cell is treated as a score."
    ]
    if "leep_minus_nce" in t.columns:
        notes.append(
            "LEEP and NCE coincide exactly when the source model's predictions are one-hot: LEEP averages "
            "log Σ_z P(y|z) θ(z|x) over soft source outputs θ, NCE uses the hard argmax z (Nguyen et al. 2020, "
            "Sec. 3; Tran et al. 2019). Confident segmentation models (almost every voxel predicted with "
            "probability near 0 or 1) make them nearly equal; LEEP − NCE shows the difference."
        )
    return Table("Transferability scores", headers, rows, notes)


def kendall_table(report: Report) -> Table:
    """Kendall tau between each score and the observed gain, per setting (suppressed below a minimum n)."""
    rows = [
        [
            TableCell(r.setting),
            TableCell(r.score.upper()),
            TableCell(str(r.n)),
            TableCell("–" if math.isnan(r.tau) else f"{r.tau:+.2f}"),
            TableCell(_p(r.p_value)),
            TableCell(r.note),
        ]
        for r in report.kendall.itertuples()
    ]
    notes = [
        "Do the scores predict the gain (and so negative transfer)? τ > 0: a higher score goes with a larger "
        f"gain. One point per transfer of a setting; τ is not shown below {MIN_KENDALL_N} transfers."
    ]
    return Table("Kendall τ: score vs observed gain", ["Setting", "Score", "n", "τ", "p", "Note"], rows, notes)


def _cell_identity(row: tuple) -> list[TableCell]:
    """Method, transfer, seed and few-shot size of a cell row (the first columns of the cell tables)."""
    return [
        TableCell(row.variant),
        TableCell(_arrow(row.transfer)),
        TableCell(str(row.seed)),
        TableCell(_shots(row.few_shot)),
    ]


def failed_table(report: Report) -> Table:
    """Failed cells with their reasons."""
    f = report.provenance["failed"]
    rows = [[*_cell_identity(r), TableCell(r.error)] for r in f.itertuples()]
    return Table(f"Failed cells ({len(f)})", ["Method", "Transfer", "Seed", "Few-shot", "Reason"], rows)


def missing_table(report: Report) -> Table:
    """Cells that other methods of the same suite have and a method lacks, with the method's reason if it skipped it."""
    m = report.provenance["missing"]
    rows = [[*_cell_identity(r), TableCell(str(r.target_steps)), TableCell(r.reason)] for r in m.itertuples()]
    return Table(f"Missing cells ({len(m)})", ["Method", "Transfer", "Seed", "Few-shot", "Steps", "Reason"], rows)


def provenance_lines(report: Report) -> list[str]:
    """Counts, versions, devices, threads and dates of the store."""
    p = report.provenance

    def listing(counts: dict) -> str:
        return ", ".join(f"{k or '?'} ({v} cells)" for k, v in counts.items())

    lines = [
        f"Cells: {p['n_cells']} ({p['n_ok_cells']} ok, {p['n_failed_cells']} failed, {len(p['missing'])} missing)",
        f"Suites: {listing(p['suites'])}",
        f"Code versions: {listing(p['code_versions'])}"
        + (" — MIXED: results come from different code" if len(p["code_versions"]) > 1 else ""),
        f"Torch versions: {listing(p['torch_versions'])}",
        f"Devices: {listing(p['devices'])}",
        f"CPU threads: {listing(p['threads'])} (a setting: CPU results depend on the thread count)",
        f"Created: {p['created_first']} … {p['created_last']}",
    ]
    if not p["duplicates"].empty:
        lines.append(f"Configurations run under several cell keys (averaged): {len(p['duplicates'])}")
    return lines


def setting_tables(report: Report, sr: SettingReport) -> list[tuple[str, Table]]:
    """A setting's (kind, table) pairs: main, comparisons, negative transfer and power (those that apply)."""
    tables = [("leaderboard", setting_table(report, sr))]
    if not _of(report.comparisons, sr.setting).empty:
        tables.append(("comparisons", comparisons_table(report, sr)))
    if not _of(report.negative_transfer, sr.setting).empty:
        tables.append(("negative-transfer", negative_transfer_table(report, sr)))
    if not _of(report.power, sr.setting).empty:
        tables.append(("power", power_table(report, sr)))
    return tables
