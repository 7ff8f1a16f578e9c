"""Threads per cell (issue 24): the count is a setting in the key, OpenMP's idle threads sleep unless the user chose."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from benchmarks.cli import main
from benchmarks.config import Budget, Cell
from benchmarks.sources import source_key
from benchmarks.store import Store
from benchmarks.threads import WAIT_VARIABLES, configure_openmp, default_jobs, threads_per_cell, wait_policy

REPO = Path(__file__).resolve().parents[1]
SUITE = """\
name: threads
dataset: phantom
backbone: unet
seeds: [0]
few_shot: [0]
methods: [finetune, scratch]
budget: {source_steps: 3, target_steps: 3, batch_size: 4, size: 32}
transfers:
  - {source: 01-t2-WT, target: 01-t1-WT}
"""


@pytest.fixture
def keep_threads() -> None:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _cell(**changes: object) -> Cell:
    cell = Cell("s", "phantom", "01-t2-WT", "01-t1-WT", "finetune", "unet", 0, budget=Budget(source_steps=3))
    return replace(cell, **changes)


def test_the_count_enters_cell_and_source_keys_only_when_not_1() -> None:
    cell = _cell()
    assert cell.threads == 1 and "threads" not in cell.normalised()  # keys of existing stores stay
    assert _cell(threads=2).key != cell.key and source_key(_cell(threads=2)) != source_key(cell)
    assert _cell(threads=2).key == _cell(threads=2).key


def test_thread_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert threads_per_cell() == 1 and threads_per_cell(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads_per_cell() == 2 and threads_per_cell(4) == 4
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")
    assert default_jobs(1) == min(4, len(os.sched_getaffinity(0))) and default_jobs(64) == 1


def test_idle_threads_sleep_unless_the_user_chose() -> None:
    env: dict[str, str] = {}
    configure_openmp(env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"} and wait_policy(env) == "OMP_WAIT_POLICY=PASSIVE"
    for name, value in (("OMP_WAIT_POLICY", "ACTIVE"), ("GOMP_SPINCOUNT", "1000"), ("KMP_BLOCKTIME", "0")):
        env = {name: value}
        configure_openmp(env)
        assert env == {name: value} and wait_policy(env) == f"{name}={value}"
    assert wait_policy({}) == "default"


# Every command-line entry point of the runner; riskmap loads torch at import, the others once their main() runs.
ENTRY_POINTS = (
    "benchmarks.cli",
    "benchmarks.check_method",
    "benchmarks.estimate",
    "benchmarks.riskmap",
    "benchmarks.interop.import_predictions",
    "benchmarks.interop.export_nnunet",
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "user", "spins"),
    [
        *((module, {}, "0") for module in ENTRY_POINTS),
        ("benchmarks.cli", {"GOMP_SPINCOUNT": "7"}, "7"),
        ("benchmarks.cli", {"KMP_BLOCKTIME": "5"}, "300000"),
    ],
)
def test_torch_loads_with_the_policy_in_every_entry_point(module: str, user: dict[str, str], spins: str) -> None:
    """libgomp prints the spin count it uses (OMP_DISPLAY_ENV) when torch loads it: 0 (sleep) unless the user chose.

    The start-up runs in each tool's ``main`` (here ``--help``, then torch loads as the tool's work would load it),
    never on ``import benchmarks`` (tests/test_layers.py)."""
    env = {k: v for k, v in os.environ.items() if k not in WAIT_VARIABLES} | user | {"OMP_DISPLAY_ENV": "VERBOSE"}
    code = f"import contextlib, {module} as tool\nwith contextlib.suppress(SystemExit): tool.main(['--help'])\n"
    code += "import torch; torch.ones(4).sum()"
    err = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True).stderr
    assert f"GOMP_SPINCOUNT = '{spins}'" in err, err[-2000:]


def _run(grid: tuple[Path, Path, Callable], out: Path, *extra: str) -> int:
    suite, root, new_cache = grid
    cache = out.parent / f"{out.name}-cache"
    if not cache.exists():
        new_cache(cache)
    args = ["--suite", str(suite), "--data-root", str(root), "--out", str(out), "--cache-dir", str(cache)]
    return main([*args, "--device", "cpu", "--jobs", "1", *extra])


def _rows(out: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in sorted((out / "cells").glob("*.parquet"))], ignore_index=True)


@pytest.mark.slow
def test_two_thread_counts_never_share_a_key(
    grid_suite: Callable, tmp_path: Path, keep_threads: None, capsys: pytest.CaptureFixture
) -> None:
    grid = grid_suite(SUITE)
    out = tmp_path / "out"
    assert _run(grid, out) == 0 and _run(grid, out, "--threads", "2") == 0
    rows = _rows(out)
    assert rows["cell_key"].nunique() == 4 and (rows.groupby("cell_key")["threads"].nunique() == 1).all()
    one, two = (set(rows.loc[rows["threads"] == n, "cell_key"]) for n in (1, 2))
    assert len(one) == len(two) == 2 and not one & two
    assert rows["omp_wait"].str.contains("OMP_WAIT_POLICY|GOMP_SPINCOUNT|KMP_BLOCKTIME").all()

    # A store written before the count entered the key: 2-thread rows under the 1-thread keys. A run with
    # 1 thread moves them to the 2-thread keys (nothing lost) and recomputes its own cells.
    legacy = tmp_path / "legacy"
    assert _run(grid, legacy, "--threads", "2") == 0
    store = Store(legacy)
    assert {p.stem for p in store.cells.glob("*.parquet")} == two
    key_of = rows[rows["threads"] == 1].drop_duplicates("cell_key").set_index("method")["cell_key"]
    for key in two:
        frame = store.read_cell(key)
        old = key_of[frame["method"].iloc[0]]
        store.write(old, frame.assign(cell_key=old))
        store.path(key).unlink()
    capsys.readouterr()
    assert _run(grid, legacy, "--dry-run") == 0
    captured = capsys.readouterr()
    assert captured.err.count("holds rows computed with 2 torch threads: the run will move") == 2
    assert "2 to run" in captured.out and {p.stem for p in store.cells.glob("*.parquet")} == one
    assert _run(grid, legacy) == 0
    assert capsys.readouterr().err.count("holds rows computed with 2 torch threads: moved them to") == 2
    after = _rows(legacy)
    assert set(after["cell_key"]) == one | two and (after.groupby("cell_key")["threads"].nunique() == 1).all()
    assert set(after.loc[after["threads"] == 2, "cell_key"]) == two
    # Same key, same numbers: the recomputed 1-thread cells equal the first store's, bitwise.
    columns = ["cell_key", "subject_id", "region", "dice", "hd95", "threads"]
    mine = after[after["threads"] == 1][columns].sort_values(columns[:3]).reset_index(drop=True)
    first = rows[rows["threads"] == 1][columns].sort_values(columns[:3]).reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, first)
