"""Split fractions: the split's sizes on random inputs, suites, the CLI end to end, old stores, bad input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.cli import main
from benchmarks.config import Cell
from benchmarks.data import open_dataset
from benchmarks.suite import SuiteError, load_suite
from datasets.core.fractions import check_fractions
from datasets.splits import split_subjects

SUITE = """\
name: fractions
dataset: phantom
backbone: unet
seeds: [0]
methods: [finetune]
budget: {source_steps: 2, target_steps: 2, batch_size: 8, size: 32}
transfers:
  - {source: 01-t2-WT, target: 01-t1-WT}
"""


def test_split_sizes_follow_random_fractions() -> None:
    """Each part within half a subject of its exact share (train: one), disjoint and covering."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(10, 200))
        f = rng.dirichlet([2, 2, 2])
        if f.min() < 0.1:  # every part >= 1 subject exactly: no rounding-up of empty parts
            continue
        ids = [f"s{i}" for i in rng.permutation(n)]
        split = split_subjects(ids, seed=int(rng.integers(1000)), fractions=tuple(f))
        sizes = np.array([len(split[k]) for k in ("train", "val", "test")])
        assert sizes.sum() == n and set().union(*map(set, split.values())) == set(ids)
        assert abs(sizes[1] - f[1] * n) <= 0.5 and abs(sizes[2] - f[2] * n) <= 0.5
        assert abs(sizes[0] - f[0] * n) <= 1.0


@pytest.mark.parametrize("bad", [(0.5, 0.5, 0.5), (0.8, 0.2, 0.0), (0.5, 0.5), (1.2, -0.1, -0.1), "0.6", None])
def test_check_fractions_refuses(bad: object) -> None:
    with pytest.raises(ValueError, match="three positive numbers"):
        check_fractions(bad)


def test_suite_declares_fractions(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SUITE + "split_fractions: [0.4, 0.4, 0.2]\n")
    assert load_suite(str(path)).split_fractions == (0.4, 0.4, 0.2)
    path.write_text(SUITE)
    assert load_suite(str(path)).split_fractions == (0.6, 0.2, 0.2)
    for bad in ("[0.5, 0.5, 0.5]", "0.6", "[a, b, c]"):
        path.write_text(SUITE + f"split_fractions: {bad}\n")
        with pytest.raises(SuiteError, match=r"s\.yaml: split_fractions: must be three positive numbers"):
            load_suite(str(path))


def test_default_fractions_keep_the_key() -> None:
    cell = Cell("s", "phantom", "01-t2-WT", "01-t1-WT", "finetune", "unet", seed=0)
    assert "split_fractions" not in cell.normalised()  # results stored before the option keep their keys
    other = Cell("s", "phantom", "01-t2-WT", "01-t1-WT", "finetune", "unet", seed=0, split_fractions=(0.4, 0.4, 0.2))
    assert other.key != cell.key


@pytest.fixture(scope="module")
def runs(grid_suite: Callable, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One cell run at the default fractions and one at 0.4 0.4 0.2, in the same store."""
    suite, root, new_cache = grid_suite(SUITE)
    base = tmp_path_factory.mktemp("fractions")
    out, cache = base / "out", new_cache(base / "cache")
    args = ["--suite", str(suite), "--data-root", str(root), "--out", str(out), "--cache-dir", str(cache)]
    args += ["--device", "cpu", "--few-shot", "1"]
    assert main(args) == 0
    assert main([*args, "--split-fractions", "0.4", "0.4", "0.2"]) == 0
    return {"args": args, "out": out, "cache": cache, "root": root}


@pytest.mark.slow
def test_cli_fractions_make_their_own_cells(runs: dict, capsys: pytest.CaptureFixture) -> None:
    rows = pd.concat(pd.read_parquet(p) for p in (runs["out"] / "cells").glob("*.parquet"))
    by = rows.groupby("split_fractions")
    assert set(by.groups) == {"0.6 0.2 0.2", "0.4 0.4 0.2"}
    assert by["cell_key"].nunique().to_dict() == {"0.6 0.2 0.2": 1, "0.4 0.4 0.2": 1}
    assert by["data_fingerprint"].first().nunique() == 2
    capsys.readouterr()
    assert main([*runs["args"], "--split-fractions", "0.4", "0.4", "0.2"]) == 0  # rerun: nothing recomputed
    out, err = capsys.readouterr()
    assert "running 0" in err
    # the run's summary shows its own setting only: 1 test subject x 1 region x 1 seed, not the other split's too
    line = next(x for x in out.splitlines() if x.strip().startswith("finetune"))
    assert line.split()[-3:] == ["1", "1", "0"], line


def test_cli_fractions_give_more_validation_subjects(runs: dict) -> None:
    """The grid phantom's groups of 6: 4/1/1 subjects at the default, 3/2/1 at 0.4 0.4 0.2."""
    sizes = {}
    for fractions in ((0.6, 0.2, 0.2), (0.4, 0.4, 0.2)):
        data = open_dataset("phantom", runs["root"], {}, runs["cache"], 32, 0, fractions)
        task = data.task("01-t1-WT")
        sizes[fractions] = [len(data.task_ids(task, part)) for part in ("train", "val", "test")]
    assert sizes == {(0.6, 0.2, 0.2): [4, 1, 1], (0.4, 0.4, 0.2): [3, 2, 1]}


def test_leaderboard_reads_old_cells_at_the_fixed_fractions(runs: dict, tmp_path: Path) -> None:
    from leaderboard.store import load_store

    old = tmp_path / "old" / "cells"
    old.mkdir(parents=True)
    for path in (runs["out"] / "cells").glob("*.parquet"):
        frame = pd.read_parquet(path)
        if (frame["split_fractions"] == "0.6 0.2 0.2").all():
            frame.drop(columns="split_fractions").to_parquet(old / path.name)  # as written before the column
    df = load_store(old.parent)
    assert (df["split_fractions"] == "0.6 0.2 0.2").all()
    assert not any("split_fractions" in note for note in df.attrs["notes"])


def test_cli_bad_fractions_one_line_exit_2(runs: dict, capsys: pytest.CaptureFixture) -> None:
    before = sorted(p.name for p in (runs["out"] / "cells").iterdir())
    for bad, message in (
        (["0.5", "0.5", "0.5"], "--split-fractions 0.5 0.5 0.5: must be three positive numbers"),
        (["0.6", "0.4"], "--split-fractions: expected 3 arguments"),
        (["0.6", "0.2", "x"], "invalid float value: 'x'"),
    ):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main([*runs["args"], "--split-fractions", *bad])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    assert sorted(p.name for p in (runs["out"] / "cells").iterdir()) == before
