"""The statistics against scipy and plain, independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from leaderboard import stats


def holm_reference(p: list[float]) -> list[float]:
    """Holm's step-down procedure written as a plain loop over the sorted p-values."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    m = len(p)
    adjusted = [0.0] * m
    running = 0.0
    for step, i in enumerate(order):
        running = max(running, min(1.0, (m - step) * p[i]))
        adjusted[i] = running
    return adjusted


@pytest.mark.parametrize("seed", range(20))
def test_holm_matches_plain_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 0.2, rng.integers(1, 15)).tolist()
    np.testing.assert_allclose(stats.holm(p), holm_reference(p), rtol=0, atol=1e-15)


def test_holm_leaves_nan_out_of_the_family() -> None:
    p = [0.01, math.nan, 0.04, 0.03]
    adjusted = stats.holm(p)
    assert math.isnan(adjusted[1])
    np.testing.assert_allclose(adjusted[[0, 2, 3]], holm_reference([0.01, 0.04, 0.03]))


# Demsar (2006), Table 5(a): q_0.05 of the Nemenyi test for k = 2..10.
DEMSAR_Q05 = [1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164]


@pytest.mark.parametrize(("k", "q"), zip(range(2, 11), DEMSAR_Q05))
def test_nemenyi_q_matches_demsar_table(k: int, q: float) -> None:
    assert stats.nemenyi_q(k, 0.05) == pytest.approx(q, abs=1e-3)


def test_nemenyi_cd_formula() -> None:
    # Demsar (2006), Sec. 3.2.4 example: k = 4, N = 14, q_0.05 = 2.569 -> CD = 1.25.
    assert stats.nemenyi_cd(4, 14, 0.05) == pytest.approx(1.25, abs=0.01)


def test_nemenyi_groups() -> None:
    ranks = [1.0, 1.5, 2.9, 3.2, 5.0]
    assert stats.nemenyi_groups(ranks, 1.0) == [(0, 1), (2, 3)]
    assert stats.nemenyi_groups(ranks, 2.0) == [(0, 2), (1, 3), (3, 4)]
    assert stats.nemenyi_groups(ranks, 0.1) == []


@pytest.mark.parametrize("n", range(1, 9))
def test_min_wilcoxon_p_is_scipys_smallest_exact_p(n: int) -> None:
    positive = np.arange(1.0, n + 1)
    assert sps.wilcoxon(positive, np.zeros(n), method="exact").pvalue == pytest.approx(stats.min_wilcoxon_p(n))


def rank_biserial_reference(d: list[float]) -> float:
    """Kerby's simple difference: (favourable - unfavourable rank sums) / total rank sum, ranks by hand."""
    nonzero = [x for x in d if x != 0]
    ordered = sorted(abs(x) for x in nonzero)
    rank = {}
    for value in set(ordered):
        positions = [i + 1 for i, v in enumerate(ordered) if v == value]
        rank[value] = sum(positions) / len(positions)
    favourable = sum(rank[abs(x)] for x in nonzero if x > 0)
    unfavourable = sum(rank[abs(x)] for x in nonzero if x < 0)
    return (favourable - unfavourable) / (favourable + unfavourable)


@pytest.mark.parametrize("seed", range(10))
def test_rank_biserial_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    d = np.round(rng.normal(0.2, 1, 25), 1)  # rounding creates ties and zeros
    assert stats.rank_biserial(d) == pytest.approx(rank_biserial_reference(d.tolist()))


@pytest.mark.parametrize("seed", range(5))
def test_wilcoxon_paired_is_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=12), rng.normal(size=12)
    result = stats.wilcoxon_paired(x, y)
    expected = sps.wilcoxon(x, y)
    assert (result.statistic, result.p_value, result.n_nonzero) == (expected.statistic, expected.pvalue, 12)


def test_iman_davenport_plain_formula() -> None:
    chi2, n, k = 9.28, 14, 4
    f = (n - 1) * chi2 / (n * (k - 1) - chi2)
    assert stats.iman_davenport(chi2, n, k) == pytest.approx((f, sps.f.sf(f, k - 1, (k - 1) * (n - 1))))
    # Demsar (2006), Sec. 3.2.4 example: chi2_F = 9.28 on 14 data sets and 4 methods gives F_F = 3.69.
    assert stats.iman_davenport(chi2, n, k)[0] == pytest.approx(3.69, abs=0.01)


def test_block_ranks_direction() -> None:
    blocks = np.array([[0.9, 0.8, 0.8], [0.1, 0.3, 0.2]])
    np.testing.assert_array_equal(stats.block_ranks(blocks, True), [[1, 2.5, 2.5], [3, 1, 2]])
    np.testing.assert_array_equal(stats.block_ranks(blocks, False), [[3, 1.5, 1.5], [1, 3, 2]])


def _seeded_units(rng: np.random.Generator, n_seeds: int, n_subjects: int, seed_sd: float, shift: float = 0.0):
    seeds = np.repeat(np.arange(n_seeds), n_subjects)
    subjects = np.tile(np.arange(n_subjects), n_seeds)
    values = shift + rng.normal(0, seed_sd, n_seeds)[seeds] + rng.normal(0, 0.01, seeds.size)
    return values, seeds, subjects


def test_bootstrap_is_deterministic_for_its_seed() -> None:
    values, seeds, subjects = _seeded_units(np.random.default_rng(1), 5, 6, 0.02)
    first = stats.hierarchical_bootstrap_ci(values, seeds, subjects, rng_seed=7)
    assert stats.hierarchical_bootstrap_ci(values, seeds, subjects, rng_seed=7) == first
    assert stats.hierarchical_bootstrap_ci(values, seeds, subjects, rng_seed=8) != first


@pytest.mark.parametrize("seed", range(5))
def test_bootstrap_ci_contains_mean_and_zero_on_null(seed: int) -> None:
    values, seeds, subjects = _seeded_units(np.random.default_rng(seed), 5, 6, 0.01)
    low, high = stats.hierarchical_bootstrap_ci(values, seeds, subjects, rng_seed=seed)
    assert low <= values.mean() <= high
    assert low <= 0 <= high


def test_bootstrap_wider_than_naive_subject_bootstrap_when_seeds_vary() -> None:
    rng = np.random.default_rng(3)
    values, seeds, subjects = _seeded_units(rng, 5, 6, seed_sd=0.05, shift=0.02)
    low, high = stats.hierarchical_bootstrap_ci(values, seeds, subjects, rng_seed=0)
    # Naive: seeds averaged per subject, then subjects resampled as if independent.
    per_subject = np.array([values[subjects == s].mean() for s in range(6)])
    draws = rng.integers(0, 6, size=(2000, 6))
    naive_low, naive_high = np.quantile(per_subject[draws].mean(axis=1), [0.025, 0.975])
    assert high - low > 3 * (naive_high - naive_low)


def test_bootstrap_stratified_keeps_strata_balanced() -> None:
    # Two strata with very different levels and no noise: a stratified resample never mixes them
    # unevenly, so the CI collapses onto the mean.
    seeds = np.repeat(np.arange(4), 4)
    strata = np.tile([0, 0, 1, 1], 4)
    values = np.where(strata == 0, 0.0, 1.0)
    low, high = stats.hierarchical_bootstrap_ci(values, seeds, np.tile([0, 1, 0, 1], 4), strata)
    assert low == pytest.approx(0.5) and high == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("low", "high", "seeds", "higher", "expected"),
    [
        (-0.3, -0.1, 5, True, "negative"),
        (0.1, 0.3, 5, True, "positive"),
        (-0.1, 0.1, 5, True, "inconclusive"),
        (-0.3, -0.1, 2, True, "inconclusive"),
        (1.0, 3.0, 5, False, "negative"),
        (-3.0, -1.0, 5, False, "positive"),
    ],
)
def test_verdict_rules(low: float, high: float, seeds: int, higher: bool, expected: str) -> None:
    assert stats.verdict(low, high, seeds, higher) == expected


def test_bootstrap_estimates_the_block_mean_when_a_stratum_lacks_seeds() -> None:
    # Task A (level 0) has 4 seeds, task B (level 1) only 2, after a failed cell: 3 blocks each, so the
    # mean over seed-averaged blocks is 0.5, while a plain mean over units would be 1/3.
    rng = np.random.default_rng(0)
    seeds = np.r_[np.repeat(np.arange(4), 3), np.repeat(np.arange(2), 3)]
    task = np.r_[np.zeros(12, int), np.ones(6, int)]
    subjects = np.r_[np.tile(np.arange(3), 4), np.tile(np.arange(3), 2)]
    values = task + rng.normal(0, 0.01, task.size)
    block_mean = np.mean([values[(task == t) & (subjects == j)].mean() for t in (0, 1) for j in range(3)])
    low, high = stats.hierarchical_bootstrap_ci(values, seeds, subjects, task, task, rng_seed=1)
    assert low <= block_mean <= high and high - low < 0.05 and abs(block_mean - 0.5) < 0.01
