"""The negative-transfer dial's dose-response: each transferred method's difference to scratch against the level.

brainsim's dial transfers name their level in the task (docs/design.md §Testbed): label conflict
``GROUP-MOD-LC<p> -> GROUP-MOD-TC`` (the source region), contrast conflict ``GROUP-flair-WT -> GROUP-cc<p>-WT``
(the target contrast). The rows come from the leaderboard's own per-transfer negative-transfer comparisons, so
every point carries the same difference, interval and verdict as the page's table.
"""

from __future__ import annotations

import re

import pandas as pd

MECHANISMS = {"label conflict": re.compile(r"-LC(\d+)->"), "contrast conflict": re.compile(r"->[^>]*-cc(\d+)-[^-]+$")}
COLUMNS = ["setting", "mechanism", "level", "transfer", "method", "mean_diff", "ci_low", "ci_high", "verdict"]


def dial_level(transfer: str) -> tuple[str, float] | None:
    """(mechanism, level in [0, 1]) of a dial transfer named as brainsim names them, else None."""
    for mechanism, pattern in MECHANISMS.items():
        found = pattern.search(transfer)
        if found:
            return mechanism, int(found.group(1)) / 100
    return None


def dial_table(negative_transfer: pd.DataFrame) -> pd.DataFrame:
    """Per-transfer rows of the method-vs-scratch comparisons that are dial transfers, by setting and mechanism."""
    if negative_transfer.empty:
        return pd.DataFrame(columns=COLUMNS)
    rows = negative_transfer[negative_transfer["level"] == "transfer"]
    out = []
    for r in rows.itertuples():
        found = dial_level(r.scope)
        if found is not None:
            out.append([r.setting, *found, r.scope, r.method, r.mean_diff, r.ci_low, r.ci_high, r.verdict])
    table = pd.DataFrame(out, columns=COLUMNS)
    return table.sort_values(["setting", "mechanism", "method", "level"], ignore_index=True)


def curves(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """One curve per (setting, mechanism) with at least two levels."""
    out = []
    for (setting, mechanism), part in table.groupby(["setting", "mechanism"], sort=True):
        if part["level"].nunique() >= 2:
            out.append((f"{mechanism} · {setting}", part))
    return out
