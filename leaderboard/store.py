"""Read a results store (every ``*.parquet`` under a folder but the estimate job's ``estimators/``) and describe its
provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa

from benchmarks.core.schema import (
    ESTIMATES_DIR,
    FIXED_BEFORE,
    NOT_SCORES,
    REQUIRED_SCHEMA,
    RUN_DEFAULTS,
    SCHEMA,
    SETTING_SCHEMA,
)
from leaderboard.errors import LeaderboardError
from leaderboard.settings import PROVENANCE_ONLY

STRING_COLUMNS = tuple(column for column, kind in REQUIRED_SCHEMA.items() if kind is str)
INT_COLUMNS = tuple(column for column, kind in REQUIRED_SCHEMA.items() if kind is int)
FLOAT_COLUMNS = tuple(column for column, kind in REQUIRED_SCHEMA.items() if kind is float)
REQUIRED_COLUMNS = tuple(REQUIRED_SCHEMA)
NULLABLE_DTYPES = {str: "string", int: "Int64", float: "Float64", bool: "boolean"}
# Columns that identify one cell's configuration, apart from the method variant.
CELL_CONFIG = ("dataset", "transfer", "target_task", "backbone", "few_shot", "target_steps", "seed")


class DamagedFile(LeaderboardError):
    """A ``*.parquet`` file of the store that is not a readable cell file (truncated, another table)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"--results {path}: {reason}")
        self.path, self.reason = path, reason


def load_store(results: Path | str, strict: bool = False) -> pd.DataFrame:
    """All rows of the store, the latest run of each cell only, with a ``variant`` name column.

    Columns beyond the schema that a method returned are kept (``score_columns``); ``split``,
    ``trial`` and ``tuned_trials`` get their defaults where absent; ``df.attrs["notes"]`` says when
    cells predate the setting columns. A damaged file is left out with a one-line warning in
    ``df.attrs["skipped"]`` (``strict``: ``DamagedFile`` is raised instead). Only reads: nothing under
    ``results`` is modified.
    """
    results = Path(results)
    if not results.is_dir():
        raise LeaderboardError(f"--results {results}: no such directory")
    files = sorted(p for p in results.rglob("*.parquet") if p.parent.name != ESTIMATES_DIR)
    if not files:
        raise LeaderboardError(
            f"--results {results}: no *.parquet files in this folder: run `python -m benchmarks.run` first"
        )
    frames, damaged, skipped = [], [], []
    for path in files:
        try:
            frames.append(_read_cell_file(path))
        except DamagedFile as exc:
            if strict:
                raise
            damaged.append(exc)
            skipped.append(
                f"warning: skipped damaged cell file {exc.path} ({exc.reason}); to recompute that cell, rerun the "
                "`python -m benchmarks.run` command that wrote it (it moves the file aside); --strict refuses the store"
            )
    if not frames:
        raise damaged[0]  # nothing else to show
    df = pd.concat(frames, ignore_index=True)
    if df.empty:
        raise LeaderboardError(f"--results {results}: the store has no rows")
    for column in STRING_COLUMNS:
        df[column] = df[column].fillna("").astype(str)
    for column in INT_COLUMNS:
        df[column] = df[column].astype("int64")
    for column in FLOAT_COLUMNS:
        df[column] = pd.to_numeric(df[column], errors="coerce").astype("float64")
    for column, kind in SETTING_SCHEMA.items():
        df[column] = df[column].astype(NULLABLE_DTYPES[kind])
    df = latest_runs(with_run_defaults(df))
    df["variant"] = variant_names(df)
    lacking = [c for c in SETTING_SCHEMA if c not in PROVENANCE_ONLY and df[c].isna().any()]
    df.attrs["notes"] = (
        [
            f"some cells predate the setting columns ({', '.join(lacking)}): they join the one setting they "
            "match on every recorded column, else their unknown values form one setting"
        ]
        if lacking
        else []
    )
    df.attrs["skipped"] = skipped
    return df


def score_columns(df: pd.DataFrame) -> list[str]:
    """Numeric per-cell columns a method returned (``leep``, ``nce`` or any other): transferability scores."""
    known = set(SCHEMA)
    return [
        c
        for c in df.columns
        if c not in known and c not in NOT_SCORES and c != "variant" and pd.api.types.is_numeric_dtype(df[c])
    ]


def _read_cell_file(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DamagedFile(path, f"unreadable parquet file ({type(exc).__name__})") from exc
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise DamagedFile(path, f"missing column(s) {', '.join(missing)}")
    for column in [*SETTING_SCHEMA, *RUN_DEFAULTS]:
        if column not in frame.columns:
            frame[column] = FIXED_BEFORE.get(column)  # written before this column existed: unknown (or its default)
    for metric, low, high in (("dice", 0.0, 1.0), ("hd95", 0.0, float("inf"))):
        values = pd.to_numeric(frame[metric], errors="coerce")
        bad = values[(values < low) | (values > high)]
        if not bad.empty:
            raise LeaderboardError(
                f"--results {path}: {metric} {bad.iloc[0]:g} outside [{low:g}, {high:g}]: mixed units "
                "(Dice must be a fraction, not a percentage; HD95 in mm)"
            )
    return frame[list(SCHEMA) + [c for c in frame.columns if c not in SCHEMA]]


def with_run_defaults(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every tuning column of ``RUN_DEFAULTS``, at its default where absent or missing (older cells)."""
    present = {c: df[c] if c in df.columns else pd.Series(None, index=df.index, dtype=object) for c in RUN_DEFAULTS}
    return df.assign(**{c: present[c].fillna(d).astype(type(d)) for c, d in RUN_DEFAULTS.items()})


def latest_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Keep, per cell key, only the rows of its latest run (a rerun supersedes a failure)."""
    latest = df.groupby("cell_key")["created_at"].transform("max")
    return df[df["created_at"] == latest].drop_duplicates(["cell_key", "subject_id", "region"], keep="last")


def _canonical_params(text: str, cell_key: str, chosen: str | None) -> str:
    """``method_params`` as sorted JSON, without the keys in ``chosen`` (JSON list; "[]" = all of them)."""
    try:
        params = json.loads(text) if text.strip() else {}
        drop = None if chosen is None else set(json.loads(chosen)) or set(params)
    except json.JSONDecodeError as exc:
        raise LeaderboardError(f"--results: cell {cell_key} has invalid method_params or tuned_params JSON") from exc
    return json.dumps({k: v for k, v in params.items() if not drop or k not in drop}, sort_keys=True)


def variant_names(df: pd.DataFrame) -> pd.Series:
    """Name each (method, method_params): the method, or ``method(k=v)`` when it has several param sets.

    Tuned and trial rows are named by their pinned params only: what their study chose (``tuned_params``;
    every param in rows written before that column) is the outcome of tuning, not the variant. They are
    named apart from untuned rows and may share a name with them: the two never share a setting (a tuned
    row's lr reads ``tuned``, ``leaderboard.settings``). ``df`` has the ``RUN_DEFAULTS`` columns
    (``with_run_defaults``).
    """
    tuned = (df["tuned_trials"] > 0) | (df["trial"] >= 0)
    chosen = [c if t else None for c, t in zip(df["tuned_params"], tuned)]
    canonical = pd.Series(
        [_canonical_params(t, k, c) for t, k, c in zip(df["method_params"], df["cell_key"], chosen)], index=df.index
    )
    names: dict[tuple[str, bool, str], str] = {}
    pairs = pd.DataFrame({"method": df["method"], "tuned": tuned, "params": canonical}).drop_duplicates()
    for (method, is_tuned), group in pairs.groupby(["method", "tuned"]):
        param_sets = sorted(group["params"])
        if len(param_sets) == 1:
            names[(method, is_tuned, param_sets[0])] = method
            continue
        dicts = [json.loads(p) for p in param_sets]
        keys = sorted({k for d in dicts for k in d})
        differing = [k for k in keys if len({json.dumps(d.get(k), sort_keys=True) for d in dicts}) > 1]
        for text, params in zip(param_sets, dicts):
            label = ", ".join(f"{k}={_format_value(params[k])}" for k in differing if k in params)
            names[(method, is_tuned, text)] = f"{method}({label or 'defaults'})"
    return pd.Series([names[key] for key in zip(df["method"], tuned, canonical)], index=df.index)


def _format_value(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def failed_cells(df: pd.DataFrame) -> pd.DataFrame:
    """One row per failed cell: its variant, configuration and reason (a ``skipped`` cell is missing, not failed)."""
    failed = df[~df["status"].isin(["ok", "skipped"])]
    columns = ["variant", *CELL_CONFIG, "cell_key", "error"]
    return failed[columns].drop_duplicates("cell_key").sort_values(columns[:-1]).reset_index(drop=True)


def missing_cells(df: pd.DataFrame, scratch: str | None) -> pd.DataFrame:
    """Cells that a suite's other variants have but one of its variants lacks (neither ok nor failed), with a
    ``reason``: the method's own for a cell it skipped (a ``skipped`` row, ``Method.check``), else empty.

    Per suite: a transfer variant of that suite is expected on every (transfer, backbone, few_shot,
    budget, seed) the suite ran; its scratch on every (target task, backbone, few_shot, budget, seed).
    A cell counts as present when any suite ran it (the runner reuses cells across suites).
    """
    ran = df[df["status"] != "skipped"]
    frames = [_missing(part, ran, scratch) for _, part in df.groupby("suite", sort=True)]
    frames = [f for f in frames if not f.empty]
    config = list(CELL_CONFIG)
    if not frames:
        return pd.DataFrame(columns=["variant", *config, "reason"])
    missing = pd.concat(frames, ignore_index=True).drop_duplicates()
    reasons = df.loc[df["status"] == "skipped", ["variant", *config, "error"]].rename(columns={"error": "reason"})
    missing = missing.merge(reasons.drop_duplicates(["variant", *config]), on=["variant", *config], how="left")
    return missing.fillna({"reason": ""}).sort_values(["variant", *config]).reset_index(drop=True)


def _missing(suite: pd.DataFrame, everything: pd.DataFrame, scratch: str | None) -> pd.DataFrame:
    config = list(CELL_CONFIG)
    is_scratch = suite["variant"] == scratch
    frames = []
    transfer_rows = suite[~is_scratch]
    if not transfer_rows.empty:
        expected = transfer_rows[config].drop_duplicates()
        variants = pd.DataFrame({"variant": sorted(transfer_rows["variant"].unique())})
        present = everything[everything["variant"] != scratch]
        frames.append(_absent(expected.merge(variants, how="cross"), present, config))
    if is_scratch.any():
        by_target = [c for c in config if c != "transfer"]
        expected = suite[by_target].drop_duplicates().assign(variant=scratch)
        absent = _absent(expected, everything[everything["variant"] == scratch], by_target)
        frames.append(absent.assign(transfer="scratch->" + absent["target_task"]))
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)[["variant", *config]]


def _absent(expected: pd.DataFrame, present: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    have = present[["variant", *keys]].drop_duplicates().assign(_present=True)
    merged = expected.merge(have, on=["variant", *keys], how="left")
    return merged[merged["_present"].isna()].drop(columns="_present")


def provenance(df: pd.DataFrame, scratch: str | None) -> dict:
    """What produced the store: versions, devices, dates, cell counts, failed and missing cells."""
    cells = df.drop_duplicates("cell_key")
    failed = failed_cells(df)
    return {
        "n_cells": int(len(cells)),
        "n_ok_cells": int((cells["status"] == "ok").sum()),
        "n_failed_cells": int(len(failed)),
        "code_versions": cells["code_version"].value_counts().sort_index().to_dict(),
        "torch_versions": cells["torch_version"].value_counts().sort_index().to_dict(),
        "devices": cells["device"].value_counts().sort_index().to_dict(),
        "suites": cells["suite"].value_counts().sort_index().to_dict(),
        "threads": cells["threads"].astype("string").fillna("?").value_counts().sort_index().to_dict(),
        "created_first": str(cells["created_at"].min()),
        "created_last": str(cells["created_at"].max()),
        "failed": failed,
        "missing": missing_cells(df, scratch),
        "duplicates": duplicate_cells(df),
    }


def duplicate_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Configurations run more than once under different cell keys (their results get averaged)."""
    cells = df[df["status"] == "ok"].drop_duplicates("cell_key")
    counts = cells.groupby(["variant", *CELL_CONFIG]).size().rename("n_cells").reset_index()
    return counts[counts["n_cells"] > 1].reset_index(drop=True)
