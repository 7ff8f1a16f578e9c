"""The read-only plan: the same split and cache paths as a real open, no writes, and the estimate's arithmetic."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.config import Budget, Cell
from benchmarks.data import open_dataset
from benchmarks.plan import CostModel, estimate, peek_dataset
from datasets.generated import NotGenerated
from datasets.phantom import generate_phantom


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")} if folder.exists() else set()


def test_peek_matches_open_and_writes_nothing(phantom_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    plan = peek_dataset("phantom", phantom_dir, {}, cache, 32, 0)
    assert not cache.exists()
    data = open_dataset("phantom", phantom_dir, {}, cache, 32, 0)
    assert plan.split == data.split  # hence the same cell fingerprints and keys
    assert plan.cached == dict(data.cached)  # the paths preprocessing wrote
    before = _files(cache)
    peek_dataset("phantom", phantom_dir, {}, cache, 32, 0)
    assert _files(cache) == before


def test_peek_does_not_generate(tmp_path: Path) -> None:
    with pytest.raises(NotGenerated) as caught:
        peek_dataset("phantom", None, {}, tmp_path / "cache", 64, 0)
    assert caught.value.params["n_subjects"] == 40
    assert not (tmp_path / "cache").exists()


def test_estimate_is_steps_times_seconds_plus_prediction(tmp_path: Path) -> None:
    root = generate_phantom(tmp_path / "phantom", n_subjects=10, n_groups=1, shape=(32, 32, 16))
    plan = peek_dataset("phantom", root, {}, tmp_path / "cache", 32, 0)
    budget = Budget(source_steps=50, target_steps=20, size=32)
    cells = [Cell("s", "phantom", "", "*-t1-WT", "scratch", "unet", seed, budget=budget) for seed in (0, 1)]
    model = CostModel(step_s=0.5, slice_s=0.01, basis="test")
    seconds, text = estimate(cells, 50, plan, model)
    n_test = len(plan.task_ids(plan.task("*-t1-WT"), "test"))
    slices = 2 * n_test * 16  # no subject is preprocessed: slices per subject from the header (depth 16)
    assert n_test > 0 and seconds == pytest.approx((2 * 20 + 50) * 0.5 + slices * 0.01)
    assert f"90 training steps x 0.500 s + predicting {slices} test slices x 10.0 ms (test;" in text
    seconds, text = estimate(cells, 0, None, model)  # data not generated: training only, and it says so
    assert seconds == pytest.approx(40 * 0.5) and "leaves out evaluation and data preparation" in text
