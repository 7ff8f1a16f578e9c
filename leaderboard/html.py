"""The self-contained static page: inline CSS, tables, figures as base64 PNG data URIs, provenance."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from leaderboard import dial, estimators
from leaderboard.analysis import Report
from leaderboard.comparisons import HOLM_FAMILY
from leaderboard.render import numeric_columns
from leaderboard.tables import (
    METRIC_LABELS,
    Table,
    TableCell,
    cd_caption,
    coverage_lines,
    direction,
    failed_table,
    kendall_table,
    methods_table,
    missing_table,
    omnibus_sentence,
    provenance_lines,
    setting_tables,
    transferability_table,
)

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;margin:0;color:#1d1d1f;
background:#fafafa;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:1.6em;margin:0 0 4px}h2{font-size:1.2em;margin:34px 0 8px;border-bottom:1px solid #ddd;
padding-bottom:4px}
.summary{color:#444;margin:0 0 12px}
.warn{background:#fff4d6;border-left:4px solid #e0a100;padding:8px 12px;margin:10px 0;border-radius:3px}
table{border-collapse:collapse;margin:8px 0;font-size:.9em;background:#fff;box-shadow:0 0 0 1px #e2e2e2}
th,td{padding:5px 10px;border-bottom:1px solid #eee;text-align:right;vertical-align:top}
th{background:#f0f2f5;font-weight:600;border-bottom:2px solid #ccc}
.text{text-align:left}td.text{max-width:420px}td.num{white-space:nowrap}
tr:nth-child(even) td{background:#fbfbfc}
.note{color:#555;font-size:.85em;margin:4px 0;max-width:1000px}
figure{margin:12px 0;background:#fff;padding:10px;box-shadow:0 0 0 1px #e2e2e2;display:inline-block}
figure img{max-width:min(100%,880px);height:auto;display:block}
figcaption{color:#555;font-size:.85em;margin-top:6px;max-width:900px}
ul.prov{margin:4px 0 10px;padding-left:20px}
.mixed{color:#b2182b;font-weight:600}
footer{margin-top:28px;border-top:1px solid #ddd;padding-top:8px}
"""


def data_uri(png: Path) -> str:
    """A PNG file as a base64 data URI."""
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def _cell(cell: TableCell, numeric: bool, tag: str = "td") -> str:
    text = escape(cell.text).replace("\n", "<br>") + ("†" if cell.dagger else "")
    if cell.bold and text:
        text = f"<b>{text}</b>"
    return f'<{tag} class="num">{text}</{tag}>' if numeric else f'<{tag} class="text">{text}</{tag}>'


def html_table(table: Table, table_id: str) -> str:
    """A titled HTML table with its notes."""
    parts = [f'<h2 id="{table_id}-title">{escape(table.title)}</h2>']
    if table.rows:
        numeric = numeric_columns(table)
        head = "".join(_cell(TableCell(h), n, "th") for h, n in zip(table.headers, numeric))
        body = "".join("<tr>" + "".join(_cell(c, n) for c, n in zip(row, numeric)) + "</tr>" for row in table.rows)
        parts.append(f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
    else:
        parts.append(f'<table id="{table_id}"><tbody><tr><td class="text">none</td></tr></tbody></table>')
    parts += [f'<p class="note">{escape(n)}</p>' for n in table.notes]
    return "\n".join(parts)


def _figure(png: Path | None, alt: str, caption: str) -> str:
    if png is None or not png.exists():
        return f'<p class="note">{escape(caption)}</p>'
    return f'<figure><img src="{data_uri(png)}" alt="{escape(alt)}"><figcaption>{escape(caption)}</figcaption></figure>'


def _warnings(report: Report) -> list[str]:
    p = report.provenance
    warnings = []
    if len(p["code_versions"]) > 1:
        warnings.append(f"These tables mix code versions: {', '.join(p['code_versions'])}.")
    if p["n_failed_cells"] or len(p["missing"]):
        warnings.append(
            f"{p['n_failed_cells']} failed and {len(p['missing'])} missing cell(s): see Provenance; "
            "each comparison uses only the units and seeds both of its methods have."
        )
    return warnings


def page(report: Report, figures: dict[str, Path], estimates: estimators.EstimatorReport | None = None) -> str:
    """The whole leaderboard page as one HTML string (no external resources); ``estimates``: the estimator section."""
    opts = report.options
    label = METRIC_LABELS[opts.metric]
    summary = (
        f"{label} ({direction(report)}) · {len(report.settings)} setting(s) · control: {opts.control} · "
        f"scratch: {opts.scratch} · α = {opts.alpha:g}"
        + (f" · equivalence margin ±{opts.margin:g} Dice (TOST)" if opts.metric == "dice" else "")
    )
    body = [f"<h1>ntbench leaderboard — {escape(label)}</h1>", f'<p class="summary">{escape(summary)}</p>']
    body.append('<ul class="prov" id="coverage">' + "".join(f"<li>{escape(x)}</li>" for x in coverage_lines(report)))
    body.append("</ul>")
    body += [f'<div class="warn">{escape(w)}</div>' for w in _warnings(report)]
    body.append(html_table(methods_table(report), "methods"))
    for i, sr in enumerate(report.settings, start=1):
        body.append(f'<h2 id="setting-{i}" class="setting">Setting {i}: {escape(sr.setting)}</h2>')
        tables = setting_tables(report, sr)
        body.append(html_table(tables[0][1], f"leaderboard-{i}"))
        body.append(f'<p class="note" id="omnibus-{i}">Omnibus: {escape(omnibus_sentence(sr))}</p>')
        if f"cd_diagram_{i}" in figures:
            body.append(_figure(figures[f"cd_diagram_{i}"], "critical-difference diagram", cd_caption(report, sr)))
        body += [html_table(table, f"{kind}-{i}") for kind, table in tables[1:]]
    for j, (group, _) in enumerate(report.learning_curves, start=1):
        body.append(f'<h2 id="learning-curve-{j}-title">Learning curve: {escape(group)}</h2>')
        body.append(
            _figure(
                figures.get(f"learning_curve_{j}"),
                "learning curve",
                f"Mean {label} per few-shot K in one dataset and budget ({escape(group)}); bars: "
                f"{round(100 * (1 - opts.alpha))}% crossed-model CI over seeds and test subjects.",
            )
        )
    for j, (group, _) in enumerate(dial.curves(dial.dial_table(report.negative_transfer)), start=1):
        body.append(f'<h2 id="dial-{j}-title">Negative-transfer dial: {escape(group)}</h2>')
        body.append(
            _figure(
                figures.get(f"dial_{j}"),
                "negative-transfer dial",
                f"Each method's {label} minus {opts.scratch} against the dial level (docs/design.md §Testbed; "
                f"values in dial.csv): below 0 is negative transfer; bars: {round(100 * (1 - opts.alpha))}% "
                "crossed-model CI, the negative-transfer table's per-transfer rows.",
            )
        )
    if not report.transferability.empty:
        body.append(html_table(transferability_table(report), "transferability"))
        body.append(html_table(kendall_table(report), "kendall"))
    if estimates is not None:
        body += [html_table(table, table_id) for table_id, table in estimators.tables(estimates, report.options)]
    body.append('<h2 id="provenance-title">Provenance</h2>')
    items = []
    for line in provenance_lines(report):
        css = ' class="mixed"' if "MIXED" in line else ""
        items.append(f"<li{css}>{escape(line)}</li>")
    body.append(f'<ul class="prov" id="provenance">{"".join(items)}</ul>')
    body.append(html_table(failed_table(report), "failed"))
    body.append(html_table(missing_table(report), "missing"))
    body.append(f'<footer class="note" id="holm-family">{escape(HOLM_FAMILY)}</footer>')
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>ntbench leaderboard — {escape(label)}</title><style>{CSS}</style></head>"
        f"<body><main>\n" + "\n".join(body) + "\n</main></body></html>\n"
    )
