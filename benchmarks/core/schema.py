"""The results store's columns and their types: one schema for the writer (benchmarks) and the reader (leaderboard).

Any further numeric column in a store is a score a method returned from ``result_columns()`` (e.g. ``leep``,
``nce``); the leaderboard analyses every such column as a transferability predictor (docs/design.md §Store).
"""

from __future__ import annotations

from benchmarks.core.options import DEFAULT_SPLIT_FRACTIONS, fractions_text

# The columns every store has had since the first release, with their types, in write order.
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
    "target_steps": int,
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
# Columns added later: every input that changes what a number means (a different value is a different
# setting, never pooled), and how the cell was run. Stores written before a column existed read it as
# missing (pandas NA), which forms one "unknown" setting.
SETTING_SCHEMA: dict[str, type] = {
    "lr": float,
    "optimizer": str,
    "schedule": str,
    "weight_decay": float,
    "source_steps": int,
    "batch_size": int,
    "augment": bool,
    "slice_size": int,
    "split_seed": int,
    "split_fractions": str,  # "train val test", e.g. "0.6 0.2 0.2"
    "dataset_options": str,
    "data_fingerprint": str,
    "threads": int,  # torch intra-op threads: a setting (CPU numbers depend on it bitwise)
    "omp_wait": str,  # OpenMP wait variables in effect, e.g. "OMP_WAIT_POLICY=PASSIVE": speed only, provenance
    "amp": str,
    "compile": bool,
    "smoke": bool,
}
# Setting columns added after an input had been fixed at one value: cells written before them had that value.
FIXED_BEFORE: dict[str, object] = {"split_fractions": fractions_text(DEFAULT_SPLIT_FRACTIONS)}
# Columns of tuning (docs/design.md §Tuning), filled when absent: which split a row scores, which tuning trial made it
# (-1: not a trial), how many trials chose the method's settings (0: default settings) and which settings the
# study chose (JSON list; "[]" in a tuned row written before this column: all of them).
RUN_DEFAULTS: dict[str, object] = {"split": "test", "trial": -1, "tuned_trials": 0, "tuned_params": "[]"}
# Columns that describe a run and are never a transferability score, even when numeric.
NOT_SCORES = ("smoke", *RUN_DEFAULTS)
# The full schema, in the order benchmarks.store writes it (its writer uses this too).
SCHEMA: dict[str, type] = {**REQUIRED_SCHEMA, **SETTING_SCHEMA}
# The folder of a results store that holds ``benchmarks.estimate``'s files (``<finetune cell key>.parquet``): not
# cell files, so the leaderboard's store reader skips it and ``leaderboard.estimators`` reads it.
ESTIMATES_DIR = "estimators"
