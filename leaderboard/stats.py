"""Statistical tests and estimators used by the leaderboard (each formula cites its source)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats

# Fewer seeds than this cannot establish a difference (DESIGN.md, "Statistics").
MIN_SEEDS = 3


def holm(p_values: ArrayLike) -> np.ndarray:
    """Holm step-down adjusted p-values; NaN entries are not part of the family and stay NaN."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    order = valid[np.argsort(p[valid], kind="stable")]
    # p_(i) * (m - i + 1), made monotone and capped at 1 (Holm 1979, Scand. J. Statist. 6:65-70).
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    return adjusted


def min_wilcoxon_p(n_nonzero: int) -> float:
    """Smallest two-sided p the exact signed-rank test can give on ``n_nonzero`` differences."""
    # All signs equal has probability 2 / 2^n under H0 (Wilcoxon 1945, Biometrics Bull. 1:80-83).
    return min(1.0, 2.0 / 2.0**n_nonzero)


def min_kendall_p(n: int) -> float:
    """Smallest two-sided p of the exact Kendall tau test on ``n`` untied pairs."""
    # All n! orderings are equally likely under H0; tau = +-1 are the extremes (Kendall 1938, Biometrika 30).
    return min(1.0, 2.0 / math.factorial(n))


def rank_biserial(differences: ArrayLike) -> float:
    """Matched-pairs rank-biserial correlation of paired differences (zeros dropped), in [-1, 1]."""
    d = np.asarray(differences, dtype=float)
    d = d[d != 0]
    if d.size == 0:
        return 0.0
    ranks = stats.rankdata(np.abs(d))
    # r = (R+ - R-) / (R+ + R-), the simple difference formula (Kerby 2014, Compr. Psychol. 3:11.IT.3.1).
    return float((ranks[d > 0].sum() - ranks[d < 0].sum()) / ranks.sum())


@dataclass(frozen=True)
class Wilcoxon:
    """Two-sided Wilcoxon signed-rank test on paired values (scipy, zeros dropped)."""

    statistic: float
    p_value: float
    n_nonzero: int


def wilcoxon_paired(x: ArrayLike, y: ArrayLike) -> Wilcoxon:
    """scipy's two-sided Wilcoxon signed-rank test of x against y; p = 1 when all pairs tie."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n_nonzero = int(np.count_nonzero(x - y))
    if n_nonzero == 0:
        return Wilcoxon(0.0, 1.0, 0)
    result = stats.wilcoxon(x, y)
    return Wilcoxon(float(result.statistic), float(result.pvalue), n_nonzero)


def hierarchical_bootstrap_ci(
    values: ArrayLike,
    seeds: ArrayLike,
    clusters: ArrayLike,
    strata: ArrayLike | None = None,
    groups: ArrayLike | None = None,
    *,
    alpha: float = 0.05,
    n_boot: int = 2000,
    rng_seed: int = 0,
) -> tuple[float, float]:
    """Percentile CI of the mean: resample seeds, then clusters (test subjects) within each seed.

    Seeds are resampled within each group (a target task and setting: seed numbers of different
    target tasks name unrelated models); clusters within each (seed, stratum), where a stratum is a
    transfer of that group and a cluster carries all its rows (regions). The statistic weights each
    stratum by its number of blocks (rows per seed), so it estimates the mean over seed-averaged
    blocks even when a failed cell leaves a stratum with fewer seeds.
    """
    frame = pd.DataFrame({"value": np.asarray(values, dtype=float), "seed": seeds, "cluster": clusters})
    frame["stratum"] = pd.factorize(np.zeros(len(frame)) if strata is None else np.asarray(strata))[0]
    frame["group"] = 0 if groups is None else np.asarray(groups)
    sums = frame.groupby(["group", "stratum", "seed", "cluster"])["value"].agg(["sum", "count"])
    group, stratum, seed = (sums.index.get_level_values(name).to_numpy() for name in ("group", "stratum", "seed"))
    cluster_sums, cluster_counts = sums["sum"].to_numpy(), sums["count"].to_numpy()
    # Contiguous runs of clusters sharing (group, stratum, seed): the index is sorted.
    new_run = np.r_[True, (group[1:] != group[:-1]) | (stratum[1:] != stratum[:-1]) | (seed[1:] != seed[:-1])]
    starts = np.flatnonzero(new_run)
    ends = np.r_[starts[1:], len(group)]
    n_strata = int(stratum.max()) + 1
    rows = np.bincount(frame["stratum"], minlength=n_strata)
    weights = rows / frame.groupby("stratum")["seed"].nunique().to_numpy()
    total = np.zeros((n_strata, n_boot))
    count = np.zeros((n_strata, n_boot))
    rng = np.random.default_rng(rng_seed)
    picks: dict = {}
    # Two-stage (seed, then subject) resampling (Davison & Hinkley 1997, Sec. 3.8; Saravanan et al. 2020).
    for start, end in zip(starts, ends):
        g = group[start]
        if g not in picks:
            labels = list(np.unique(seed[group == g]))
            picks[g] = (labels, rng.multinomial(len(labels), np.full(len(labels), 1.0 / len(labels)), n_boot))
        labels, counts = picks[g]
        slots = np.arange(counts.max())
        used = slots[None, :] < counts[:, [labels.index(seed[start])]]
        draw = rng.integers(start, end, size=(n_boot, len(slots), end - start))
        total[stratum[start]] += (cluster_sums[draw].sum(axis=-1) * used).sum(axis=1)
        count[stratum[start]] += (cluster_counts[draw].sum(axis=-1) * used).sum(axis=1)
    with np.errstate(invalid="ignore"):
        means = total / count
    present = count > 0
    stat = (np.where(present, means, 0.0) * weights[:, None]).sum(axis=0) / (present * weights[:, None]).sum(axis=0)
    low, high = np.quantile(stat, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def block_ranks(blocks: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Rank the methods (columns) within each block (row): 1 = best, ties share the average rank."""
    # Ranking per data set, average ranks for ties (Demsar 2006, JMLR 7, Sec. 3.2.2).
    return stats.rankdata(-blocks if higher_is_better else blocks, axis=1)


def iman_davenport(chi2: float, n: int, k: int) -> tuple[float, float]:
    """Iman-Davenport F from Friedman's chi-square on N blocks and k methods, and its p-value."""
    denominator = n * (k - 1) - chi2
    if denominator <= 0:
        return math.inf, 0.0
    # F_F = (N-1) chi2_F / (N(k-1) - chi2_F), F with (k-1, (k-1)(N-1)) df (Demsar 2006, Sec. 3.2.2).
    f = (n - 1) * chi2 / denominator
    return float(f), float(stats.f.sf(f, k - 1, (k - 1) * (n - 1)))


def nemenyi_q(k: int, alpha: float) -> float:
    """Critical value q_alpha of the Nemenyi test for k methods."""
    # Studentized range quantile with infinite df, divided by sqrt(2) (Demsar 2006, Sec. 3.2.2, Table 5a).
    return float(stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2))


def nemenyi_cd(k: int, n: int, alpha: float) -> float:
    """Nemenyi critical difference of mean ranks for k methods on n blocks."""
    # CD = q_alpha * sqrt(k (k+1) / (6 N)) (Demsar 2006, Sec. 3.2.2).
    return nemenyi_q(k, alpha) * math.sqrt(k * (k + 1) / (6 * n))


def nemenyi_groups(sorted_ranks: ArrayLike, cd: float) -> list[tuple[int, int]]:
    """Maximal runs (first, last index) of sorted mean ranks spanning less than the CD."""
    ranks = np.asarray(sorted_ranks, dtype=float)
    # Mean ranks differing by less than the CD are not significantly different (Demsar 2006, Sec. 3.2.2).
    runs = [(i, int(np.flatnonzero(ranks - ranks[i] < cd)[-1])) for i in range(len(ranks))]
    runs = [(i, j) for i, j in runs if j > i]
    return [(i, j) for i, j in runs if not any(a <= i and j <= b and (a, b) != (i, j) for a, b in runs)]


def verdict(ci_low: float, ci_high: float, n_seeds: int, higher_is_better: bool) -> str:
    """``negative``/``positive`` when the CI of (method - reference) excludes 0 with enough seeds."""
    if n_seeds < MIN_SEEDS or not (np.isfinite(ci_low) and np.isfinite(ci_high)):
        return "inconclusive"
    below, above = ci_high < 0, ci_low > 0
    if below or above:
        return "positive" if above == higher_is_better else "negative"
    return "inconclusive"
