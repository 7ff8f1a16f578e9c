"""One shared source model (``source_seed``): keys, suites, the run end to end, old stores (bad option values:
tests/test_cli_options.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.cli import main
from benchmarks.config import Cell
from benchmarks.sources import source_key
from benchmarks.suite import SuiteError, load_suite

SUITE = """\
name: shared-source
dataset: phantom
backbone: unet
seeds: [0, 1]
methods: [finetune, scratch]
budget: {source_steps: 2, target_steps: 2, batch_size: 8, size: 32}
transfers:
  - {source: 01-t2-WT, target: 01-t1-WT}
"""


def test_keys_of_a_shared_source() -> None:
    cell = Cell("s", "phantom", "01-t2-WT", "01-t1-WT", "finetune", "unet", seed=3)
    assert "source_seed" not in cell.normalised()  # results stored before the setting keep their keys
    shared = replace(cell, source_seed=0)
    assert shared.key != cell.key and shared.source_model_seed == 0 and cell.source_model_seed == 3
    # the shared model is seed 0's own source model: one checkpoint, reused by the per-seed design too
    assert source_key(shared) == source_key(replace(cell, seed=0)) != source_key(cell)
    assert source_key(replace(shared, seed=5)) == source_key(shared)
    scratch = Cell("s", "phantom", "", "01-t1-WT", "scratch", "unet", seed=3)
    assert replace(scratch, source_seed=0).key == scratch.key  # scratch has no source model


def test_suite_declares_a_source_seed(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SUITE + "source_seed: 0\n")
    assert load_suite(str(path)).source_seed == 0
    path.write_text(SUITE)
    assert load_suite(str(path)).source_seed == -1
    for bad in ("-2", "0.5", "true", "[0]"):
        path.write_text(SUITE + f"source_seed: {bad}\n")
        with pytest.raises(SuiteError, match=r"s\.yaml: source_seed: .*must be an integer >= 0, or -1"):
            load_suite(str(path))


@pytest.fixture(scope="module")
def runs(grid_suite: Callable, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Seeds 0 and 1 with one source model per seed, then with seed 0's source model shared, in one store."""
    suite, root, new_cache = grid_suite(SUITE)
    base = tmp_path_factory.mktemp("shared")
    out, cache = base / "out", new_cache(base / "cache")
    args = ["--suite", str(suite), "--data-root", str(root), "--out", str(out), "--cache-dir", str(cache)]
    args += ["--device", "cpu", "--few-shot", "1"]
    assert main(args) == 0
    per_seed = sorted(p.name for p in (cache / "sources").glob("*.pt"))
    assert main([*args, "--source-seed", "0"]) == 0
    return {"args": args, "out": out, "cache": cache, "per_seed": per_seed}


@pytest.mark.slow
def test_a_shared_source_is_trained_once_and_recorded(runs: dict) -> None:
    assert len(runs["per_seed"]) == 2  # one source model per seed
    assert sorted(p.name for p in (runs["cache"] / "sources").glob("*.pt")) == runs["per_seed"]  # seed 0's, reused
    rows = pd.concat(pd.read_parquet(p) for p in (runs["out"] / "cells").glob("*.parquet"))
    finetune = rows[rows["method"] == "finetune"]
    assert sorted(finetune.groupby("source_seed")["seed"].unique().map(sorted).to_dict().items()) == [
        (-1, [0, 1]),
        (0, [0, 1]),
    ]
    assert set(rows.loc[rows["method"] == "scratch", "source_seed"]) == {-1}
    assert rows.loc[rows["method"] == "scratch", "cell_key"].nunique() == 2  # scratch ran once per seed
    dice = finetune.set_index(["source_seed", "seed", "subject_id", "region"])["dice"].sort_index()
    assert dice[(0, 0)].equals(dice[(-1, 0)])  # seed 0 fine-tunes the same source model either way


@pytest.mark.slow
def test_leaderboard_separates_the_designs_and_joins_scratch(runs: dict) -> None:
    from leaderboard.settings import assign_settings
    from leaderboard.store import load_store

    df = assign_settings(load_store(runs["out"]), "scratch")
    by_method = df.groupby("method")["setting"].unique().map(sorted)
    assert len(by_method["finetune"]) == 2 and any("source_seed=0" in s for s in by_method["finetune"])
    assert by_method["scratch"] == by_method["finetune"]  # scratch rows pair with both designs
    assert (df["method"] == "scratch").sum() == 2 * (load_store(runs["out"])["method"] == "scratch").sum()


def test_leaderboard_reads_rows_written_before_the_column(runs: dict, tmp_path: Path) -> None:
    from leaderboard.store import load_store

    old = tmp_path / "old" / "cells"
    old.mkdir(parents=True)
    for path in (runs["out"] / "cells").glob("*.parquet"):
        frame = pd.read_parquet(path)
        if (frame["source_seed"] == -1).all():
            frame.drop(columns="source_seed").to_parquet(old / path.name)
    df = load_store(old.parent)
    assert (df["source_seed"] == -1).all()
