"""The results store's columns and their types: one schema for the writer (benchmarks) and the reader (leaderboard).

Any further numeric column in a store is a score a method returned from ``result_columns()`` (e.g. ``leep``,
``nce``); the leaderboard analyses every such column as a transferability predictor (docs/design.md §Store).
"""

from __future__ import annotations

from benchmarks.core.settings import REQUIRED, RUN, SETTING, SETTINGS, columns

# The columns every store has had since the first release, with their types, in write order: the cell's identity,
# the settings stored since then (``benchmarks.core.settings``: the target budget), the scores and provenance.
REQUIRED_SCHEMA: dict[str, type] = {
    "cell_key": str,
    "suite": str,
    "dataset": str,
    "transfer": str,
    "source_task": str,
    "target_task": str,
    "transfer_type": str,
    "method": str,
    "method_params": str,
    "backbone": str,
    "seed": int,
    "few_shot": int,
    **columns(REQUIRED),
    "subject_id": str,
    "region": str,
    "dice": float,
    "hd95": float,
    "status": str,
    "error": str,
    "code_version": str,
    "torch_version": str,
    "device": str,
    "wall_s": float,
    "created_at": str,
}
# Columns added later (``Setting.column == SETTING``): every input that changes what a number means (a different
# value is a different setting, never pooled), and how the cell was run. Stores written before a column existed
# read it as missing (pandas NA), which forms one "unknown" setting, unless FIXED_BEFORE gives its value.
SETTING_SCHEMA: dict[str, type] = columns(SETTING)
# Setting columns added after an input had been fixed at one value: cells written before them had that value.
FIXED_BEFORE: dict[str, object] = {s.name: s.before for s in SETTINGS if s.column == SETTING and s.before is not None}
# Columns of tuning (docs/design.md §Tuning), filled when absent: which split a row scores, which tuning trial made it
# (-1: not a trial), how many trials chose the method's settings (0: default settings) and which settings the
# study chose (JSON list; "[]" in a tuned row written before this column: all of them).
RUN_DEFAULTS: dict[str, object] = {s.name: s.before for s in SETTINGS if s.column == RUN}
# Columns that describe a run and are never a transferability score, even when numeric.
NOT_SCORES = (*SETTING_SCHEMA, *RUN_DEFAULTS)
# The full schema, in the order benchmarks.store writes it (its writer uses this too).
SCHEMA: dict[str, type] = {**REQUIRED_SCHEMA, **SETTING_SCHEMA}
# The folder of a results store that holds ``benchmarks.estimate``'s files (``<finetune cell key>.parquet``): not
# cell files, so the leaderboard's store reader skips it and ``leaderboard.estimators`` reads it.
ESTIMATES_DIR = "estimators"
