"""Tuning engine: trials are validation cells, resumed from the store, never recomputed nor duplicated."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.cell import cell_frame
from benchmarks.config import Cell
from benchmarks.store import Store
from benchmarks.tune import BUDGET_SPACE, TuneConfig, TuneError, declared_spaces, parse_space_override, tune
from methods.base import METHODS, HParam, MethodConfigError, Space

GRID = [
    Cell("t", "phantom", "01-t2-WT", "01-t1-WT", method, "unet", seed)
    for method in ("finetune", "l2sp", "freeze")
    for seed in (0, 1)
] + [Cell("t", "phantom", "", "01-t1-WT", "scratch", "unet", seed) for seed in (0, 1)]


def fake_dice(cell: Cell) -> float:
    """A deterministic objective with an optimum near lr = 3e-3 (stands in for training)."""
    return 1.0 / (1.0 + (math.log10(cell.budget.target_lr) + 2.5) ** 2) + 0.01 * cell.seed


class Runner:
    """Writes each cell's rows like a worker; raises KeyboardInterrupt after ``kill_after`` cells."""

    def __init__(self, store: Store, kill_after: int | None = None) -> None:
        self.store, self.kill_after, self.ran = store, kill_after, []

    def __call__(self, cells: list[Cell]) -> None:
        for cell in cells:
            if self.kill_after is not None and len(self.ran) >= self.kill_after:
                raise KeyboardInterrupt
            rows = [{"subject_id": s, "region": "WT", "dice": fake_dice(cell), "hd95": 1.0} for s in ("a", "b")]
            self.store.write(cell.key, cell_frame(cell, True, rows, {}, "ok", "", "cpu", 0.1))
            self.ran.append(cell)


def trial_rows(store: Store) -> pd.DataFrame:
    rows = store.read()
    return rows[rows["split"] == "val"].drop_duplicates("cell_key")


def test_trials_are_val_cells_then_best_runs_on_test_seeds(tmp_path: Path) -> None:
    store = Store(tmp_path)
    config = TuneConfig(trials=3, seeds=(100,))
    studies, left = tune(GRID, config, store, Runner(store))
    assert left == 0 and len(studies) == 4  # finetune, l2sp, freeze per transfer; scratch per target
    trials = trial_rows(store)
    assert len(trials) == 4 * 3 and set(trials["seed"]) == {100} and set(trials["trial"]) == {0, 1, 2}
    assert trials.groupby(["method", "trial"]).size().eq(1).all()
    for study in studies:
        params, value = study.best()
        assert value == max(v for _, v in study.trials)
        cells = study.test_cells()
        assert [c.seed for c in cells] == [0, 1] and all(c.split == "test" and c.trial == -1 for c in cells)
        assert all(c.tuned_trials == 3 and c.budget.target_lr == params["lr"] for c in cells)
        assert all(c.budget.lr == study.base.budget.lr for c in cells)  # the source phase's is untouched
        space = set(BUDGET_SPACE) | {k for k, s in METHODS.get(study.base.method).hparams.items() if s.space}
        assert set(params) == space
        assert {k: v for k, v in cells[0].method_params.items()} == {k: v for k, v in params.items() if k != "lr"}


def test_rerun_recomputes_nothing_and_replays_the_same_study(tmp_path: Path) -> None:
    store = Store(tmp_path)
    first, _ = tune(GRID, TuneConfig(trials=3), store, Runner(store))
    again = Runner(store)
    second, left = tune(GRID, TuneConfig(trials=3), store, again)
    assert again.ran == [] and left == 0
    assert [s.trials for s in first] == [s.trials for s in second]
    assert [s.test_cells() for s in first] == [s.test_cells() for s in second]


@pytest.mark.slow
def test_killed_run_resumes_without_duplicated_trials(tmp_path: Path) -> None:
    whole, killed = Store(tmp_path / "whole"), Store(tmp_path / "killed")
    tune(GRID, TuneConfig(trials=4, seeds=(100, 101)), whole, Runner(whole))
    with pytest.raises(KeyboardInterrupt):
        tune(GRID, TuneConfig(trials=4, seeds=(100, 101)), killed, Runner(killed, kill_after=11))
    assert len(trial_rows(killed)) == 11
    _, left = tune(GRID, TuneConfig(trials=4, seeds=(100, 101)), killed, None)  # replay only (dry run)
    assert left == 4 * 4 * 2 - 11
    resumed = Runner(killed)
    tune(GRID, TuneConfig(trials=4, seeds=(100, 101)), killed, resumed)
    assert len(resumed.ran) == 4 * 4 * 2 - 11
    rows = trial_rows(killed)
    assert rows.groupby(["method", "trial", "seed"]).size().eq(1).all()  # no trial twice
    assert set(rows["cell_key"]) == set(trial_rows(whole)["cell_key"])  # the same trials as an unbroken run


def test_random_sampler_and_pinned_parameters(tmp_path: Path) -> None:
    store = Store(tmp_path)
    pinned = [replace(c, method_params={"scope": "encoder"}) for c in GRID if c.method == "freeze"]
    studies, _ = tune(pinned, TuneConfig(trials=2, sampler="random"), store, Runner(store))
    assert all(set(p) == {"lr"} for s in studies for p, _ in s.trials)  # the pinned scope is not searched
    assert all(c.method_params == {"scope": "encoder"} for c in studies[0].test_cells())


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (TuneConfig(trials=0), "--tune 0"),
        (TuneConfig(trials=2, sampler="grid"), "sampler 'grid'"),
        (TuneConfig(trials=2, seeds=(0, 100)), "also test seeds"),
        (TuneConfig(trials=2, space={"finetune.nope": Space("log", 1, 2)}), "'finetune.nope'"),
    ],
)
def test_bad_tune_settings(config: TuneConfig, message: str) -> None:
    with pytest.raises(TuneError, match=message):
        config.check([0, 1], ["finetune", "scratch"])


def test_space_overrides_and_reversed_bounds() -> None:
    spaces = declared_spaces(["finetune", "freeze"])
    assert parse_space_override("lr", [1e-4, 1e-3], spaces) == Space("log", 1e-4, 1e-3)
    assert parse_space_override("freeze.scope", ["encoder"], spaces).choices == ("encoder",)
    with pytest.raises(TuneError, match="low must be below high"):
        parse_space_override("lr", [1e-2, 1e-4], spaces)
    with pytest.raises(TuneError, match="no declared search space"):
        parse_space_override("finetune.lr", [1, 2], spaces)
    with pytest.raises(MethodConfigError, match="low must be below high"):
        HParam(1.0, "x", space=Space("uniform", 2.0, 1.0))
    with pytest.raises(MethodConfigError, match="> 0"):
        Space("log", 0.0, 1.0)


@pytest.mark.parametrize("name", METHODS.names())
def test_every_declared_hyperparameter_has_a_search_space_holding_its_default(name: str) -> None:
    for key, spec in METHODS.get(name).hparams.items():
        assert spec.space is not None, f"{name}.{key} has no search space"
        if spec.space.kind == "choice":
            assert spec.default in spec.space.choices
        else:
            assert spec.space.low <= spec.default <= spec.space.high, f"{name}.{key}"


def test_search_space_derives_from_the_declared_choices_and_bounds() -> None:
    assert HParam("a", "x", choices=("a", "b")).space == Space("choice", choices=("a", "b"))
    assert HParam(2, "x", low=1, high=4).space == Space("int", 1, 4)
    assert HParam(0.5, "x", low=0, high=1).space == Space("uniform", 0, 1)
    assert HParam(0.5, "x", low=0).space is None  # unbounded above: searched only where a space is given
    assert HParam(0.5, "x", low=0, space=Space("log", 0.1, 1)).space == Space("log", 0.1, 1)
    assert declared_spaces(["freeze"])["freeze.scope"] == Space("choice", choices=("encoder", "encoder+decoder"))
    with pytest.raises(MethodConfigError, match=r"search space log\[0.1, 2\] reaches 2, not in \[0, 1\]"):
        HParam(0.5, "x", low=0, high=1, space=Space("log", 0.1, 2))
    with pytest.raises(MethodConfigError, match=r"reaches 'c', not in \['a', 'b'\]"):
        HParam("a", "x", choices=("a", "b"), space=Space("choice", choices=("a", "c")))
    with pytest.raises(MethodConfigError, match=r"default -1 not in \[0, inf\)"):
        HParam(-1, "x", low=0)


def test_a_skipped_trial_counts_as_done(tmp_path: Path) -> None:
    """A trial whose method declined the cell (a ``skipped`` row) is told as failed, not rerun nor lost."""
    from benchmarks.cell import failed_frame
    from benchmarks.tune import done, trial_value

    store, cell = Store(tmp_path), replace(GRID[0], split="val", trial=0, seed=100)
    store.write(cell.key, failed_frame(cell, True, "method 'finetune' declines", "cpu", status="skipped"))
    assert store.state(cell.key) == "skipped" and done(store, cell) and trial_value(store, [cell]) is None
