"""Pair results across method variants: units (one seed) and blocks (seeds averaged).

A *unit* is one (setting, transfer, test subject, region, seed); a *block* is the same without the
seed. Scratch has no source, so its result on a target task is paired with every transfer into that
task on (target task, backbone, few_shot, target_steps, seed, subject, region).
"""

from __future__ import annotations

import pandas as pd

SETTING = ["dataset", "backbone", "few_shot", "target_steps"]
# Seeds are resampled within a seed group: the same seed number on another target task is another model.
SEED_GROUP = [*SETTING, "target_task"]
STRATUM = [*SEED_GROUP, "transfer", "transfer_type"]
BLOCK = [*STRATUM, "subject_id", "region"]
UNIT = [*BLOCK, "seed"]
# Metric name -> whether higher values are better.
METRICS = {"dice": True, "hd95": False}


def unit_table(df: pd.DataFrame, metric: str, scratch: str | None) -> pd.DataFrame:
    """Wide table of the metric of ok rows: index UNIT, one column per variant (NaN where absent)."""
    ok = df[df["status"] == "ok"]
    is_scratch = ok["variant"] == scratch
    transfers = ok.loc[~is_scratch, [*SETTING, "target_task", "transfer", "transfer_type"]].drop_duplicates()
    scratch_rows = ok[is_scratch]
    if not transfers.empty and not scratch_rows.empty:
        scratch_rows = scratch_rows.drop(columns=["transfer", "transfer_type"]).merge(
            transfers, on=[*SETTING, "target_task"]
        )
    long = pd.concat([ok[~is_scratch], scratch_rows], ignore_index=True)
    wide = long.pivot_table(index=UNIT, columns="variant", values=metric, aggfunc="mean", observed=True)
    wide.columns.name = None
    return wide


def paired_units(units: pd.DataFrame, variants: list[str]) -> pd.DataFrame:
    """The units on which every one of ``variants`` has a result."""
    return units[variants].dropna()


def block_means(paired: pd.DataFrame) -> pd.DataFrame:
    """Average paired units over seeds: one row per block."""
    return paired.groupby(level=BLOCK, observed=True).mean()


def seeds_per_group(index: pd.MultiIndex) -> pd.Series:
    """Number of distinct seeds behind each seed group (target task and setting) of a unit index."""
    return index.to_frame(index=False).groupby(SEED_GROUP, observed=True)["seed"].nunique()
