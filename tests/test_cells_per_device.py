"""--cells-per-device 2 on the CPU writes the same rows as running each cell alone (same thread count)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch

from benchmarks.cli import main
from benchmarks.executors import pool_devices

PROVENANCE = ["code_version", "torch_version", "device", "wall_s", "created_at"]
SUITE = """\
name: pair
dataset: phantom
backbone: unet
seeds: [0, 1]
few_shot: [0]
methods: [finetune]
budget: {source_steps: 3, target_steps: 3, batch_size: 4, size: 32}
transfers:
  - {source: 01-t2-WT, target: 01-t1-WT}
"""


@pytest.fixture(scope="module")
def grid(grid_suite: Callable) -> tuple[Path, Path, Callable]:
    """(suite file, phantom root, ``cache_with_subjects``)."""
    return grid_suite(SUITE)


@pytest.fixture
def keep_threads() -> None:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _run(grid: tuple[Path, Path, Callable], out: Path, *extra: str) -> pd.DataFrame:
    suite, root, new_cache = grid
    cache = new_cache(out.parent / f"{out.name}-cache")  # own source models: nothing is shared between the runs
    argv = ["--suite", str(suite), "--data-root", str(root), "--out", str(out), "--cache-dir", str(cache)]
    assert main([*argv, "--device", "cpu", "--threads", "1", *extra]) == 0
    rows = pd.concat([pd.read_parquet(p) for p in sorted((out / "cells").glob("*.parquet"))])
    return rows.drop(columns=PROVENANCE).sort_values(["cell_key", "subject_id", "region"]).reset_index(drop=True)


@pytest.mark.slow
def test_two_cells_per_device_equal_each_cell_alone(grid, tmp_path: Path, keep_threads: None) -> None:
    together = _run(grid, tmp_path / "together", "--cells-per-device", "2")
    alone = pd.concat([_run(grid, tmp_path / f"alone{seed}", "--seeds", str(seed)) for seed in (0, 1)])
    alone = alone.sort_values(["cell_key", "subject_id", "region"]).reset_index(drop=True)
    assert (together["status"] == "ok").all() and together["seed"].nunique() == 2
    assert (together["threads"] == 1).all()
    pd.testing.assert_frame_equal(together, alone)  # bitwise: dice, hd95 and every setting column


def test_pool_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pool_devices(torch.device("cpu"), 3) == ["cpu"] * 3
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pool_devices(torch.device("cuda"), 2) == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]
    assert pool_devices(torch.device("cuda:1"), 2) == ["cuda:1", "cuda:1"]
