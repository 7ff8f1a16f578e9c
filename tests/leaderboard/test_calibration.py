"""The interval covers the truth: simulated stores with known variance components (vectorised, seconds)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from leaderboard.comparisons import compare
from leaderboard.simulate import REGIMES, SEEDS, SUBJECTS, calibration, simulate_differences, simulate_store
from leaderboard.stats import crossed_interval

# Cells where 93-97% is not reached, and why (docs/statistics.md): with 2 test subjects and seed variance
# dominating, the 1-df subject mean square is often below the residual one and is replaced by it, and
# the t has 2-4 df: the interval over-covers (conservative), it never under-covers.
CONSERVATIVE = {("seed-dominant", 3, 2): 0.99}


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return calibration(2000, rng_seed=0)


def test_grid_is_complete(table: pd.DataFrame) -> None:
    assert len(table) == len(REGIMES) * len(SEEDS) * len(SUBJECTS) == 18


@pytest.mark.parametrize("regime", sorted(REGIMES))
def test_coverage_is_nominal_for_every_seed_and_subject_count(table: pd.DataFrame, regime: str) -> None:
    rows = table[table["regime"] == regime]
    for r in rows.itertuples():
        high = CONSERVATIVE.get((regime, r.seeds, r.subjects), 0.97)
        assert 0.93 <= r.coverage <= high, (regime, r.seeds, r.subjects, r.coverage)
        assert r.type1 <= 0.07, (regime, r.seeds, r.subjects, r.type1)


def test_power_grows_with_seeds_or_subjects(table: pd.DataFrame) -> None:
    seed = table[(table["regime"] == "seed-dominant") & (table["subjects"] == 8)].sort_values("seeds")
    subject = table[(table["regime"] == "subject-dominant") & (table["seeds"] == 5)].sort_values("subjects")
    assert seed["power"].is_monotonic_increasing and subject["power"].is_monotonic_increasing
    assert seed["power"].iloc[-1] > 0.5 and subject["power"].iloc[-1] > 0.8


def test_compare_on_a_simulated_store_is_the_vectorised_estimator() -> None:
    # The store path (load format -> units -> grid -> model) gives what the calibration measured.
    components = REGIMES["subject-dominant"]
    store = simulate_store(np.random.default_rng(5), 4, 6, components, effect=0.01, n_transfers=3)
    grid = simulate_differences(np.random.default_rng(5), 1, 4, 6, components, 0.01, 3)[0].mean(axis=(0, 3))
    expected = crossed_interval(grid)
    row = compare(store, "finetune").set_index("scope").loc["all"]
    assert (row["n_units"], row["n_seeds"]) == (6, 4)  # each subject once, though scored on 3 target tasks
    assert (row["mean_diff"], row["ci_low"], row["ci_high"], row["p_value"]) == pytest.approx(
        (float(expected.mean), float(expected.ci_low), float(expected.ci_high), float(expected.p_value)), abs=1e-9
    )
