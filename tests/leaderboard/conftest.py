"""Synthetic results stores shaped like the runner's output, and a built default leaderboard."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from itertools import product
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

# target task -> (dataset, source task (or a tuple: one transfer each), transfer type, region, scratch Dice,
# test subject prefix)
TASKS = {
    "02-t1-TC": ("fets", "01-t1-TC", "cross-group", "TC", 0.70, "FeTS2022_02"),
    "t1-GM": ("iseg", "t2-GM", "cross-modality", "GM", 0.83, "iSeg-"),
}
# variant -> (method, params, Dice shift over scratch per target task, or per transfer "source->target")
METHODS = {
    "scratch": ("scratch", {}, {"02-t1-TC": 0.0, "t1-GM": 0.0}),
    "finetune": ("finetune", {}, {"02-t1-TC": 0.05, "t1-GM": -0.03}),
    "l2sp": ("l2sp", {"alpha": 0.01}, {"02-t1-TC": 0.055, "t1-GM": -0.015}),
    "bss": ("bss", {"k": 1}, {"02-t1-TC": 0.045, "t1-GM": -0.025}),
    "trm(alpha=1)": ("trm", {"alpha": 1, "weighting": "1-e"}, {"02-t1-TC": 0.065, "t1-GM": 0.0}),
    "trm(alpha=2)": ("trm", {"alpha": 2, "weighting": "1-e"}, {"02-t1-TC": 0.07, "t1-GM": 0.01}),
}
START = datetime(2025, 3, 1, 8, 0, tzinfo=timezone.utc)


def make_store(
    root: Path,
    *,
    methods: dict = METHODS,
    tasks: dict = TASKS,
    seeds: int = 5,
    subjects: int = 6,
    few_shots: tuple[int, ...] = (0,),
    seed_sd: float = 0.03,
    interaction_sd: float = 0.01,
    subject_sd: float = 0.06,
    noise_sd: float = 0.015,
    failed: tuple[tuple[str, str, int], ...] = (),
    missing: tuple[tuple[str, str, int], ...] = (),
    code_versions: tuple[str, ...] = ("3f2a9c1",),
    scores: bool = True,
    rng_seed: int = 0,
    columns: dict | None = None,
    subject_ids: list[str] | None = None,
) -> Path:
    """Write one parquet file per cell under ``root/cells`` and return ``root``.

    Dice = scratch level + method shift + (task, seed) effect + (variant, task, seed) interaction
    + (task, subject) effect + noise; HD95 falls with Dice. ``failed``/``missing`` name
    (variant, target task, seed) cells to store as failed or to leave out. ``columns`` are added to every row
    (and to the cell key), e.g. ``{"lr": 0.01}`` or ``{"suite": "other"}``; ``subject_ids`` replaces the
    per-task test subjects (the same ids in every target task: shared subjects).
    """
    columns = columns or {}
    rng = np.random.default_rng(rng_seed)
    cells = root / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    index = 0
    for task, (dataset, source_tasks, kind, region, level, prefix) in tasks.items():
        sources = (source_tasks,) if isinstance(source_tasks, str) else source_tasks
        subject_effect = rng.normal(0, subject_sd, subjects)
        ids = subject_ids or [f"{prefix}{i + 1:03d}" for i in range(subjects)]
        for seed in range(seeds):
            seed_effect = rng.normal(0, seed_sd)
            ft_gain = methods.get("finetune", ("", {}, {}))[2].get(task, 0.0)
            leep = -1.2 + 2.0 * ft_gain + rng.normal(0, 0.03)
            nce = -0.9 + 1.5 * ft_gain + rng.normal(0, 0.03)
            for k_shot, (variant, (method, params, shifts)) in product(few_shots, methods.items()):
                is_scratch = method == "scratch"
                for source in [""] if is_scratch else sources:
                    interaction = rng.normal(0, interaction_sd)
                    noise = rng.normal(0, noise_sd, subjects)
                    if (variant, task, seed) in missing:
                        continue
                    shot_penalty = 0.0 if k_shot == 0 else (0.25 if is_scratch else 0.12) / np.sqrt(k_shot)
                    shift = shifts.get(f"{source}->{task}", shifts.get(task))
                    dice = level + shift + seed_effect + interaction + subject_effect + noise
                    dice = np.clip(dice - shot_penalty, 0.0, 1.0)
                    config = {
                        "task": task,
                        "source": source,
                        "method": method,
                        "params": params,
                        "seed": seed,
                        "few_shot": k_shot,
                        "columns": columns,
                    }
                    key = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
                    row = {
                        "cell_key": key,
                        "suite": "default",
                        "dataset": dataset,
                        "transfer": f"{source or 'scratch'}->{task}",
                        "source_task": source,
                        "target_task": task,
                        "transfer_type": "none" if is_scratch else kind,
                        "method": method,
                        "method_params": json.dumps(params),
                        "backbone": "monai-unet",
                        "seed": seed,
                        "few_shot": k_shot,
                        "code_version": code_versions[index % len(code_versions)],
                        "torch_version": "2.5.1+cu121",
                        "device": "cuda:0 (NVIDIA H100 80GB HBM3)",
                        "wall_s": float(rng.uniform(40, 90)),
                        "created_at": (START + timedelta(minutes=7 * index)).isoformat(),
                        "leep": np.nan if is_scratch or not scores else leep,
                        "nce": np.nan if is_scratch or not scores else nce,
                        "target_steps": 300,
                    } | columns
                    index += 1
                    if (variant, task, seed) in failed:
                        frame = pd.DataFrame([row | _failure("CUDA out of memory. Tried to allocate 2.00 GiB")])
                    else:
                        hd95 = np.maximum(0.5, 2.0 + 30.0 * (1 - dice) + rng.normal(0, 0.5, subjects))
                        frame = pd.DataFrame(
                            {
                                **row,
                                "subject_id": ids,
                                "region": region,
                                "dice": dice,
                                "hd95": hd95,
                                "status": "ok",
                                "error": "",
                            }
                        )
                    frame["seed"] = frame["seed"].astype("int64")
                    frame.to_parquet(cells / f"{key}.parquet", index=False)
    return root


def _failure(reason: str) -> dict:
    return {
        "subject_id": "",
        "region": "",
        "dice": np.nan,
        "hd95": np.nan,
        "status": "failed",
        "error": reason,
    }


@pytest.fixture
def store_factory(tmp_path: Path) -> Callable[..., Path]:
    """``store_factory(name, **kwargs)`` writes a synthetic store under the test's tmp folder."""
    return lambda name="store", **kwargs: make_store(tmp_path / name, **kwargs)


@pytest.fixture(scope="session")
def default_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six variants, 2 target tasks, 5 seeds, 6 test subjects, one failed cell, LEEP/NCE scores."""
    return make_store(tmp_path_factory.mktemp("default") / "results", failed=(("l2sp", "t1-GM", 3),))


def run_build(results: Path, out: Path, *extra: str) -> int:
    """Run the command in-process and return its exit status."""
    from leaderboard.build import main

    return main(["--results", str(results), "--out", str(out), *extra])


@pytest.fixture(scope="session")
def default_build(default_store: Path) -> Path:
    """The default store built once with the default options; returns the output folder."""
    out = default_store.parent / "out"
    assert run_build(default_store, out) == 0
    return out


@pytest.fixture
def summarise(monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """``summarise(store, smoke=False, margin=0.02)``: the runner's end-of-run summary of every cell of a synthetic
    store, as if one run had made them (its setting values read from the store instead of from ``Cell`` objects)."""
    import benchmarks.summary
    from leaderboard import load_store

    def summarise(store: Path, smoke: bool = False, margin: float = 0.02) -> str:
        rows = load_store(store)
        setting = {c: set(rows[c].dropna()) for c in benchmarks.summary.SAME_SETTING if c in rows.columns}
        moved = rows[rows["source_task"] != ""]
        setting |= {c: set(moved[c].dropna()) for c in benchmarks.summary.TRANSFER_ONLY if c in rows.columns}
        monkeypatch.setattr(benchmarks.summary, "_run_settings", lambda cells: setting)
        cells = [
            SimpleNamespace(
                key=r.cell_key,
                suite=r.suite,
                dataset=r.dataset,
                backbone=r.backbone,
                source_task=r.source_task,
                target_task=r.target_task,
                few_shot=r.few_shot,
                budget=SimpleNamespace(target_steps=r.target_steps),
            )
            for r in rows.drop_duplicates("cell_key").itertuples()
        ]
        return benchmarks.summary.run_summary(rows, cells, store, smoke=smoke, margin=margin)

    return summarise
