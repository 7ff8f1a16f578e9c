"""Renderings of the leaderboard's tables: GitHub Markdown and LaTeX (booktabs); ``leaderboard.html`` the page."""

from __future__ import annotations

import re

from leaderboard.analysis import Report
from leaderboard.comparisons import HOLM_FAMILY
from leaderboard.tables import (
    METRIC_LABELS,
    Table,
    TableCell,
    cd_caption,
    coverage_lines,
    failed_table,
    kendall_table,
    methods_table,
    missing_table,
    omnibus_sentence,
    provenance_lines,
    setting_tables,
    transferability_table,
)

_NUMERIC = re.compile(r"[\d\s.,±+\-–<>\[\]]+|–|n too small")


def numeric_columns(table: Table) -> list[bool]:
    """Per column: whether every body cell holds a number (right-aligned) rather than text."""
    return [
        i > 0 and all(_NUMERIC.fullmatch(row[i].text) for row in table.rows if row[i].text)
        for i in range(len(table.headers))
    ]


def _md_cell(cell: TableCell) -> str:
    text = cell.text.replace("|", "\\|").replace("\n", "<br>") + ("†" if cell.dagger else "")
    return f"**{text}**" if cell.bold and text else text


def markdown_table(table: Table) -> str:
    """A GitHub-flavoured Markdown table with its title and notes."""
    lines = [f"## {table.title}", ""]
    if table.rows:
        lines.append("| " + " | ".join(_md_cell(TableCell(h)) for h in table.headers) + " |")
        lines.append("|" + "|".join("---:" if n else ":---" for n in numeric_columns(table)) + "|")
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    else:
        lines.append("_none_")
    return "\n".join(lines + [""] + [f"{note}\n" for note in table.notes])


def to_markdown(report: Report) -> str:
    """The whole leaderboard as one Markdown document."""
    parts = [f"# ntbench leaderboard — {METRIC_LABELS[report.options.metric]}", ""]
    parts += [f"- {line}" for line in coverage_lines(report)]
    versions = report.provenance["code_versions"]
    if len(versions) > 1:
        parts.append(f"- Warning: this page mixes code versions ({', '.join(versions)}).")
    parts += ["", markdown_table(methods_table(report))]
    for sr in report.settings:
        parts += [markdown_table(t) for _, t in setting_tables(report, sr)]
        parts += [f"Omnibus ({sr.setting}): {omnibus_sentence(sr)}", ""]
        if sr.omnibus["draw_cd"]:
            parts += [f"{cd_caption(report, sr)} (The diagram is on index.html.)", ""]
    if not report.transferability.empty:
        parts += [markdown_table(transferability_table(report)), markdown_table(kendall_table(report))]
    parts += ["## Provenance", ""]
    parts += [f"- {line}" for line in provenance_lines(report)] + [""]
    parts += [markdown_table(failed_table(report)), markdown_table(missing_table(report)), "---", "", HOLM_FAMILY, ""]
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


def _tex_cell(cell: TableCell) -> str:
    text = tex_escape(cell.text)
    text = rf"\textbf{{{text}}}" if cell.bold else text
    return text + (r"$^\dagger$" if cell.dagger else "")


def to_latex(tables: list[Table]) -> str:
    """One booktabs table environment per table (needs \\usepackage{booktabs})."""
    return "\n".join(_latex_table(t, i) for i, t in enumerate(tables))


def _latex_table(table: Table, index: int) -> str:
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
            rf"\label{{tab:ntbench-leaderboard-{index + 1}}}",
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
