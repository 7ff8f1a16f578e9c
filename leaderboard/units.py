"""From store rows of one setting to (seed x test subject) grids: the independent units of a comparison.

A *block* is one (target task, transfer, test subject, region); the *unit* is the test subject: within
each seed, all its blocks inside a comparison's scope are averaged (docs/design.md §Statistics). Scratch
has no source, so its result on a target task is paired with every transfer into that task.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

BLOCK = ["target_task", "transfer", "subject_id", "region"]
UNIT_INDEX = [*BLOCK, "seed"]
# Metric name -> whether higher values are better.
METRICS = {"dice": True, "hd95": False}


def wide_table(rows: pd.DataFrame, metric: str, scratch: str | None) -> pd.DataFrame:
    """The metric of one setting's ok rows: index UNIT_INDEX, one column per variant (NaN where absent)."""
    ok = rows[rows["status"] == "ok"]
    is_scratch = ok["variant"] == scratch
    transfers = ok.loc[~is_scratch, ["target_task", "transfer"]].drop_duplicates()
    scratch_rows = ok[is_scratch]
    if not transfers.empty and not scratch_rows.empty:
        scratch_rows = scratch_rows.drop(columns="transfer").merge(transfers, on="target_task")
    long = pd.concat([ok[~is_scratch], scratch_rows], ignore_index=True)
    wide = long.pivot_table(index=UNIT_INDEX, columns="variant", values=metric, aggfunc="mean", observed=True)
    wide.columns.name = None
    return wide


@dataclass(frozen=True)
class Grids:
    """Per variant a (seed x subject) DataFrame of block-averaged values, on one complete grid."""

    values: dict[str, pd.DataFrame]
    dropped_seeds: list
    dropped_blocks: int

    @property
    def n_seeds(self) -> int:
        return len(next(iter(self.values.values())).index) if self.values else 0

    @property
    def n_units(self) -> int:
        return len(next(iter(self.values.values())).columns) if self.values else 0

    def note(self) -> str:
        """What was left out to make the grid complete, or ''."""
        parts = []
        if self.dropped_seeds:
            parts.append(f"seed(s) {', '.join(map(str, self.dropped_seeds))} left out (a block lacks them)")
        if self.dropped_blocks:
            parts.append(f"{self.dropped_blocks} block(s) left out (they lack a seed)")
        return "; ".join(parts)


def grids(wide: pd.DataFrame, variants: list[str]) -> Grids:
    """Complete-case (block x seed) grid on which every variant has a value, averaged to (seed, subject).

    Complete cases: a block lacking a seed (a failed or missing cell) either loses that seed for every
    block or is itself left out, whichever keeps more (block, seed) values; ties keep the blocks.
    """
    data = wide[variants].dropna()
    if data.empty:
        return Grids({}, [], 0)
    presence = pd.Series(1.0, index=data.index).unstack("seed")
    full_seeds = presence.columns[presence.notna().all(axis=0)]
    full_blocks = presence.index[presence.notna().all(axis=1)]
    by_seeds = len(full_seeds) * len(presence.index)
    by_blocks = len(full_blocks) * len(presence.columns)
    seeds = list(presence.columns)
    blocks_kept = presence.index
    if by_seeds >= by_blocks:
        seeds = list(full_seeds)
    else:
        blocks_kept = full_blocks
    dropped_seeds = [s for s in presence.columns if s not in seeds]
    keep = data.index.droplevel("seed").isin(blocks_kept) & data.index.get_level_values("seed").isin(seeds)
    data = data[keep]
    if data.empty:
        return Grids({}, dropped_seeds, len(presence.index) - len(blocks_kept))
    means = data.groupby(level=["seed", "subject_id"], observed=True).mean()
    values = {v: means[v].unstack("subject_id") for v in variants}
    return Grids(values, dropped_seeds, len(presence.index) - len(blocks_kept))


# Scope levels, narrowest first: one transfer, the transfers into one target task, every target task of a setting.
LEVELS = ("transfer", "target", "all")


@dataclass(frozen=True)
class Scope:
    """The units a table column or comparison row pools: one transfer, a target task's transfers, or all."""

    name: str  # the transfer (``t2-GM->t1-GM``), the target task, or ``all``
    level: str  # one of LEVELS
    transfers: tuple[str, ...]


def comparison_scopes(wide: pd.DataFrame) -> list[Scope]:
    """Every distinct set of units of a setting once, widest last: each transfer; each target task into which
    two or more transfers go; ``all`` when there are two or more target tasks. A pooled scope that would hold
    the same units as a narrower one is not made, so one comparison has one row (and one verdict)."""
    pairs = wide.index.to_frame(index=False)[["target_task", "transfer"]].drop_duplicates()
    out: list[Scope] = []
    for task, part in pairs.groupby("target_task", sort=True):
        transfers = tuple(sorted(part["transfer"]))
        out += [Scope(t, "transfer", (t,)) for t in transfers]
        if len(transfers) > 1:
            out.append(Scope(str(task), "target", transfers))
    if pairs["target_task"].nunique() > 1:
        out.append(Scope("all", "all", tuple(sorted(pairs["transfer"]))))
    return out


def scope_rows(wide: pd.DataFrame, scope: Scope) -> pd.DataFrame:
    """The rows of the units of a scope."""
    return wide[wide.index.get_level_values("transfer").isin(scope.transfers)]


def covering(units: pd.DataFrame, scope: Scope, variants: list[str]) -> list[str]:
    """The variants with a result on every transfer of the scope (a pooled scope pools them all, or not them)."""
    transfers = units.index.get_level_values("transfer")
    return [v for v in variants if all(units.loc[transfers == t, v].notna().any() for t in scope.transfers)]
