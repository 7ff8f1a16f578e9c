"""End-of-run summary: mean Dice per transfer for every method the store holds."""

from __future__ import annotations

import pandas as pd

from benchmarks.config import Cell


def summary_table(rows: pd.DataFrame, cells: list[Cell]) -> str:
    """Per transfer of this run: mean Dice ± std over (seed, subject, region), n rows, seeds, failures."""
    lines: list[str] = []
    transfers = sorted({(c.source_task, c.target_task) for c in cells if c.source_task})
    transfers += sorted({("", c.target_task) for c in cells} - {("", t) for _, t in transfers})
    for source, target in transfers:
        same = (rows["target_task"] == target) & (rows["source_task"].isin([source, ""]))
        for attr, col in (("dataset", "dataset"), ("backbone", "backbone")):
            same &= rows[col].isin({getattr(c, attr) for c in cells})
        same &= rows["few_shot"].isin({c.few_shot for c in cells})
        same &= rows["target_steps"].isin({c.budget.target_steps for c in cells})
        sub = rows[same]
        if sub.empty:
            continue
        lines.append(f"\n{source or 'scratch'} -> {target}")
        lines.append(f"  {'method':<28} {'Dice':>15} {'n':>5} {'seeds':>6} {'failed':>7}")
        for (method, params), grp in sub.groupby(["method", "method_params"], sort=True):
            ok = grp[grp["status"] == "ok"]
            label = method if params in ("{}", "") else f"{method} {params}"
            mean, std = ok["dice"].mean(), ok["dice"].std(ddof=1) if len(ok) > 1 else 0.0
            failed = grp.loc[grp["status"] == "failed", "cell_key"].nunique()
            dice = f"{mean:.3f} ± {std:.3f}" if len(ok) else "-"
            lines.append(f"  {label:<28} {dice:>15} {len(ok):>5} {ok['seed'].nunique():>6} {failed:>7}")
    seeds = max((rows[rows["cell_key"].isin({c.key for c in cells})]["seed"].nunique()), 0)
    if seeds < 3:
        lines.append(
            f"\nThese numbers stand on {seeds} seed(s). Fewer than 3 seeds cannot establish a difference "
            "between methods: rerun with --seeds 0 1 2 (or more) and read the leaderboard "
            "(python -m leaderboard.build) for paired tests and confidence intervals."
        )
    return "\n".join(lines)
