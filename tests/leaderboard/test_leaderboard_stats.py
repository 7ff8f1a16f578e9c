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


def holm_by_family_reference(rows: list[dict], column: str) -> list[float]:
    """Holm within each (setting, control, per-transfer or pooled) family by plain loops; fewer than 3 seeds or a
    NaN p: in no family."""
    families: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        if r["n_seeds"] >= 3 and not math.isnan(r[column]):
            families.setdefault((r["setting"], r["control"], r["level"] == "transfer"), []).append(i)
    out = [math.nan] * len(rows)
    for members in families.values():
        for i, q in zip(members, holm_reference([rows[i][column] for i in members])):
            out[i] = q
    return out


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


@pytest.mark.parametrize("n", range(2, 8))
def test_min_kendall_p_is_scipys_smallest_exact_p(n: int) -> None:
    assert sps.kendalltau(np.arange(n), np.arange(n), method="exact").pvalue == pytest.approx(stats.min_kendall_p(n))
    assert (stats.min_kendall_p(n) <= 0.05) == (n >= stats.MIN_KENDALL_N)


def test_iman_davenport_is_undefined_when_every_unit_ranks_alike() -> None:
    # Every unit ranks the 4 methods 1, 2, 3, 4: chi2 = N(k-1) = 3N (Demsar 2006, Sec. 3.2.2), F's denominator 0.
    units = np.arange(4.0)[None, :] + np.random.default_rng(0).uniform(0, 0.5, (9, 1))
    chi2 = sps.friedmanchisquare(*units.T).statistic
    assert chi2 == pytest.approx(9 * 3)
    f, p = stats.iman_davenport(chi2, 9, 4)
    assert math.isnan(f) and math.isnan(p)
    assert not math.isnan(stats.iman_davenport(chi2 - 0.5, 9, 4)[0])  # one unit off: F is a number again


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


def crossed_reference(d: np.ndarray, alpha: float = 0.05) -> tuple[float, float, float, float]:
    """Mean, CI and p of the crossed model written independently (``crossed_parts``)."""
    grand, se, nu = crossed_parts(d)
    q = sps.t.ppf(1 - alpha / 2, nu)
    return grand, grand - q * se, grand + q * se, 2 * sps.t.sf(abs(grand) / se, nu)


def crossed_parts(d: np.ndarray) -> tuple[float, float, float]:
    """Mean, SE and df of the crossed model written independently: residuals from a least-squares fit of the
    additive (seed + subject) model, variance components by plain loops, Satterthwaite df by hand."""
    n_s, n_j = d.shape
    y = d.ravel()
    design = np.zeros((n_s * n_j, n_s + n_j))
    for s in range(n_s):
        for j in range(n_j):
            design[s * n_j + j, s] = 1.0
            design[s * n_j + j, n_s + j] = 1.0
    fitted = design @ np.linalg.lstsq(design, y, rcond=None)[0]
    ms_e = float(((y - fitted) ** 2).sum()) / ((n_s - 1) * (n_j - 1))
    grand = sum(y) / len(y)
    ms_a = sum(n_j * (sum(d[s]) / n_j - grand) ** 2 for s in range(n_s)) / (n_s - 1)
    ms_b = sum(n_s * (sum(d[:, j]) / n_s - grand) ** 2 for j in range(n_j)) / (n_j - 1)
    terms, dfs = [], []
    for ms, df in ((ms_a, n_s - 1), (ms_b, n_j - 1)):
        if ms > ms_e:  # component estimate positive
            terms.append(ms)
            dfs.append(df)
    n_pos = len(terms)
    terms.append((1 - n_pos) * ms_e)
    dfs.append((n_s - 1) * (n_j - 1))
    total = sum(terms)
    nu = total**2 / sum(t**2 / f for t, f in zip(terms, dfs))
    nu = min(nu, dfs[max(range(len(terms)), key=lambda i: terms[i])])
    return grand, math.sqrt(total / (n_s * n_j)), nu


@pytest.mark.parametrize("seed", range(20))
def test_crossed_interval_matches_independent_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_s, n_j = int(rng.integers(2, 8)), int(rng.integers(2, 12))
    scale = rng.uniform(0, 0.05, 3)  # random mixes of seed, subject and residual variance
    d = (
        rng.normal(0, scale[0], (n_s, 1))
        + rng.normal(0, scale[1], (1, n_j))
        + rng.normal(0, scale[2] + 1e-3, (n_s, n_j))
        + rng.normal(0, 0.02)
    )
    est = stats.crossed_interval(d)
    np.testing.assert_allclose(
        [est.mean, est.ci_low, est.ci_high, est.p_value], crossed_reference(d), rtol=1e-9, atol=1e-12
    )


def test_crossed_interval_is_vectorised_over_stores() -> None:
    d = np.random.default_rng(0).normal(size=(7, 4, 5))
    batch = stats.crossed_interval(d)
    for i in range(7):
        one = stats.crossed_interval(d[i])
        assert (one.ci_low, one.ci_high, one.p_value) == pytest.approx(
            (batch.ci_low[i], batch.ci_high[i], batch.p_value[i])
        )


@pytest.mark.parametrize("seed", range(10))
def test_p_value_and_interval_agree(seed: int) -> None:
    rng = np.random.default_rng(seed)
    d = rng.normal(0.02, 0.03, (200, 4, 6)) + rng.normal(0, 0.03, (200, 4, 1))
    est = stats.crossed_interval(d, 0.05)
    excludes = (est.ci_low > 0) | (est.ci_high < 0)
    np.testing.assert_array_equal(excludes, est.p_value < 0.05)


def test_crossed_interval_needs_two_seeds_and_two_subjects() -> None:
    for shape in ((1, 5), (5, 1)):
        est = stats.crossed_interval(np.ones(shape))
        assert est.mean == 1 and np.isnan(est.ci_low) and np.isnan(est.p_value)


def test_crossed_interval_seed_only_variance_is_the_seed_t_test() -> None:
    # Differences that vary only by seed: the interval is the one-sample t interval of the seed means.
    seeds = np.array([0.01, 0.05, -0.02, 0.03])
    d = seeds[:, None] + np.zeros((4, 6))
    d[0, 0] += 1e-9  # a tiny residual so the grid is not exactly additive
    est = stats.crossed_interval(d)
    reference = sps.ttest_1samp(d.mean(axis=1), 0.0)
    assert est.p_value == pytest.approx(reference.pvalue, rel=1e-4)
    assert est.df == pytest.approx(3)


def test_variance_components_and_power_against_simulation() -> None:
    from leaderboard.simulate import REGIMES, simulate_differences, unit_grids

    rng = np.random.default_rng(1)
    for components in REGIMES.values():
        grids = unit_grids(simulate_differences(rng, 4000, 5, 8, components, effect=0.03))
        est = stats.crossed_interval(grids)
        pooled = stats.variance_components(
            float(np.mean(est.ms_seed)), float(np.mean(est.ms_subject)), float(np.mean(est.ms_resid)), 5, 8
        )
        predicted = stats.power(pooled, 0.03, 5, 8)
        assert predicted == pytest.approx(np.mean(est.p_value < 0.05), abs=0.05)


@pytest.mark.parametrize(
    ("diff", "p_holm", "seeds", "higher", "expected"),
    [
        (-0.2, 0.01, 5, True, "negative"),
        (0.2, 0.01, 5, True, "positive"),
        (0.2, 0.2, 5, True, "inconclusive"),
        (-0.2, 0.01, 2, True, "inconclusive"),
        (2.0, 0.01, 5, False, "negative"),
        (-2.0, 0.01, 5, False, "positive"),
        (-0.2, float("nan"), 5, True, "inconclusive"),
    ],
)
def test_verdict_rules(diff: float, p_holm: float, seeds: int, higher: bool, expected: str) -> None:
    assert stats.verdict(diff, p_holm, seeds, 0.05, higher, ("negative", "positive")) == expected
