"""Settings (every input that changes what a number means) and the row filters applied before analysis.

Different settings are never averaged: each is its own table. Scratch has no source, so its cells
(``source_steps`` 0: ``TRANSFER_ONLY``) join every transfer setting that matches them on all other setting columns.
"""

from __future__ import annotations

import pandas as pd

from benchmarks.core.settings import IDENTITY_SETTINGS, REQUIRED, SETTING, SETTINGS, leaderboard_settings, transfer_only
from leaderboard.errors import LeaderboardError

# Identity of a setting, in label order (docs/design.md §Statistics): the cell's identity columns and every stored
# setting that separates settings (``benchmarks.core.settings``). Not ``omp_wait``, which changes how fast a cell
# ran, not its numbers. ``threads`` is a setting: the reduction order of CPU convolutions follows the thread count,
# and on a few target subjects that moved a subject's Dice by up to 0.25 (issue 24). ``suite`` is not a setting
# either: cell keys do not contain it (a cell another suite already ran is reused), so it names runs, not settings.
PROVENANCE_ONLY = tuple(s.name for s in SETTINGS if s.column == SETTING and not s.separates)
SETTING_COLUMNS = leaderboard_settings()
# Always in a setting's label: the identity columns and the settings stored since the first release (the budget).
ALWAYS_LABELLED = (*IDENTITY_SETTINGS, *(s.name for s in SETTINGS if s.column == REQUIRED))
UNKNOWN = "?"
# What benchmarks.tune chooses per method besides method parameters (its BUDGET_SPACE; not imported here:
# it needs optuna). In a tuned cell these are the method's choice, so they do not separate settings.
TUNED_COLUMNS = tuple(s.name for s in SETTINGS if s.tuned)
# Settings only transferred cells have (scratch: 0): scratch rows join a transfer setting whatever their value.
TRANSFER_ONLY = list(transfer_only())
TUNED = "tuned"


def is_smoke(df: pd.DataFrame) -> pd.Series:
    """Rows of runs made with the runner's ``--steps`` (column ``smoke``; absent = not a smoke run)."""
    if "smoke" not in df.columns:
        return pd.Series(False, index=df.index)
    return df["smoke"].astype("boolean").fillna(False).astype(bool)


def left_out(df: pd.DataFrame, include_smoke: bool) -> dict[str, int]:
    """How many smoke-run cells and validation/trial rows the filters leave out of ``df``."""
    cells = df.drop_duplicates("cell_key")
    return {
        "smoke_cells": 0 if include_smoke else int(is_smoke(cells).sum()),
        "non_test_rows": int(((df["split"] != "test") | (df["trial"] >= 0)).sum()),
    }


def select(
    df: pd.DataFrame,
    *,
    suites: list[str] | None = None,
    datasets: list[str] | None = None,
    methods: list[str] | None = None,
    include_smoke: bool = False,
) -> pd.DataFrame:
    """Rows of test-split results (not tuning trials) of the chosen suites, datasets and methods.

    ``--suite S`` keeps every cell of the (setting, target task) pairs in which suite S wrote a cell:
    a cell that another suite ran first is recorded under that suite and reused, so filtering on the
    ``suite`` column alone would lose it. Scratch rows are kept with the transfers they pair with.
    """
    out = df[(df["split"] == "test") & (df["trial"] < 0)]
    if not include_smoke:
        out = out[~is_smoke(out)]
    for option, column, wanted in (("--dataset", "dataset", datasets), ("--suite", "suite", suites)):
        if not wanted:
            continue
        have = sorted(set(out[column]))
        unknown = [w for w in wanted if w not in have]
        if unknown:
            raise LeaderboardError(f"{option} {unknown[0]}: not in the store (has {', '.join(have) or 'none'})")
        if column == "dataset":
            out = out[out[column].isin(wanted)]
        else:
            text = setting_text(out).drop(columns=TRANSFER_ONLY).assign(target_task=out["target_task"])
            keys = _join(text)
            out = out[keys.isin(set(keys[out[column].isin(wanted)]))]
    if methods:
        have = sorted(set(out["method"]) | set(out["variant"]))
        unknown = [m for m in methods if m not in have]
        if unknown:
            raise LeaderboardError(f"--method {unknown[0]}: not in the store (has {', '.join(have)})")
        out = out[out["method"].isin(methods) | out["variant"].isin(methods)]
    if out.empty:
        raise LeaderboardError("--results: no rows left after the filters (split, smoke, --suite/--dataset/--method)")
    return out


def _text(column: pd.Series) -> pd.Series:
    return column.astype("string").fillna(UNKNOWN).astype(str)


def setting_text(df: pd.DataFrame) -> pd.DataFrame:
    """The setting columns as text; a tuned cell's tuned columns read ``tuned`` (the method chose them).

    Unknown values (cells written before a column existed) take the values of the one setting they
    match on every recorded column, source steps aside (scratch has none); with no such setting, or
    several, they stay unknown and form their own setting.
    """
    text = pd.DataFrame({c: _text(df[c]) for c in SETTING_COLUMNS}, index=df.index)
    tuned = df["tuned_trials"] > 0
    for column in TUNED_COLUMNS:
        text.loc[tuned, column] = TUNED
    columns = [c for c in SETTING_COLUMNS if c not in TRANSFER_ONLY]
    distinct = text[columns].drop_duplicates()
    resolved = {}
    for _, row in distinct[(distinct == UNKNOWN).any(axis=1)].iterrows():
        known = row != UNKNOWN
        fits = distinct[
            (distinct.loc[:, known] == row[known]).all(axis=1) & ((distinct != UNKNOWN).sum(axis=1) > known.sum())
        ]
        fewest = fits[(fits == UNKNOWN).sum(axis=1) == (fits == UNKNOWN).sum(axis=1).min()] if len(fits) else fits
        if len(fewest) == 1:
            resolved[tuple(row)] = fewest.iloc[0]
    if resolved:
        keys = pd.Series(list(map(tuple, text[columns].to_numpy())), index=text.index)
        for old, new in resolved.items():
            text.loc[keys == old, columns] = new.to_numpy()
    return text


def _join(text: pd.DataFrame) -> pd.Series:
    if text.empty:
        return pd.Series([], index=text.index, dtype=object)
    return text.agg("\x1f".join, axis=1)


def assign_settings(df: pd.DataFrame, scratch: str | None) -> pd.DataFrame:
    """``df`` with a ``setting`` label column; scratch rows are repeated into each transfer setting they join."""
    text = setting_text(df)
    key = _join(text)
    joinable = _join(text.drop(columns=TRANSFER_ONLY))
    is_scratch = df["variant"] == scratch
    frames = [df[~is_scratch].assign(_key=key[~is_scratch])]
    if is_scratch.any():
        joins = pd.DataFrame(
            {
                "_join": joinable[~is_scratch],
                "_key": key[~is_scratch],
                **{c: df.loc[~is_scratch, c] for c in TRANSFER_ONLY},
            }
        ).drop_duplicates("_key")
        rows = df[is_scratch].assign(_join=joinable[is_scratch], _own=key[is_scratch])
        matched = rows["_join"].isin(set(joins["_join"]))
        joined = rows[matched].drop(columns=TRANSFER_ONLY).merge(joins, on="_join")
        lone = rows[~matched].assign(_key=rows.loc[~matched, "_own"])  # a target with scratch only: its own setting
        frames.append(pd.concat([joined, lone], ignore_index=True).drop(columns=["_join", "_own"]))
    out = pd.concat(frames, ignore_index=True)
    used = text.assign(_key=key).drop_duplicates("_key").set_index("_key").loc[out["_key"].unique()]
    labels = setting_labels(used)
    out["setting"] = out["_key"].map(labels)
    return out.drop(columns="_key")


def setting_labels(settings: pd.DataFrame) -> dict:
    """A short label per setting (rows of ``setting_text``): dataset, backbone, K and budget always; other
    columns only where they vary within the dataset."""
    labels = {}
    for key, row in settings.iterrows():
        # Columns that vary among the settings of this dataset (another dataset's differ anyway).
        same = settings[settings["dataset"] == row["dataset"]]
        varying = [c for c in SETTING_COLUMNS if c not in ALWAYS_LABELLED and same[c].nunique() > 1]
        parts = [
            str(row["dataset"]),
            str(row["backbone"]),
            f"K={'all' if row['few_shot'] == '0' else row['few_shot']}",
            f"{row['target_steps']} steps",
        ]
        parts += [f"{c}={row[c]}" for c in varying]
        labels[key] = " · ".join(parts)
    return labels
