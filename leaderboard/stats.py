"""Statistical tests and estimators used by the leaderboard (each formula cites its source).

The interval and p-value of a comparison come from one crossed random-effects model of the paired
differences, d[s, j] = mu + a_s + b_j + e_sj (seed s, test subject j), so that they cover new seeds
*and* new test subjects (Clark 1973, "The language-as-fixed-effect fallacy", J. Verb. Learn. Verb.
Behav. 12:335-359). ``docs/statistics.md`` gives the derivation and the calibration table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

# Fewer seeds than this cannot establish a difference (docs/design.md §Statistics).
MIN_SEEDS = 3
# Fewer independent units than this: no critical-difference diagram.
MIN_CD_UNITS = 5


@dataclass(frozen=True)
class CrossedEstimate:
    """The crossed-model estimate of the mean difference (arrays when estimated for many stores at once)."""

    mean: np.ndarray
    se: np.ndarray
    df: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    p_value: np.ndarray
    ms_seed: np.ndarray
    ms_subject: np.ndarray
    ms_resid: np.ndarray


def mean_squares(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two-way ANOVA mean squares (seed, subject, residual) of complete grids ``d[..., seed, subject]``."""
    n_seeds, n_subjects = d.shape[-2:]
    grand = d.mean(axis=(-2, -1))
    seed_means, subject_means = d.mean(axis=-1), d.mean(axis=-2)
    # Balanced two-way layout without replication (Searle, Casella & McCulloch 1992, Variance Components, Sec. 4.5).
    ms_seed = n_subjects * ((seed_means - grand[..., None]) ** 2).sum(axis=-1) / (n_seeds - 1)
    ms_subject = n_seeds * ((subject_means - grand[..., None]) ** 2).sum(axis=-1) / (n_subjects - 1)
    resid = d - seed_means[..., :, None] - subject_means[..., None, :] + grand[..., None, None]
    ms_resid = (resid**2).sum(axis=(-2, -1)) / ((n_seeds - 1) * (n_subjects - 1))
    return ms_seed, ms_subject, ms_resid


def crossed_interval(d: ArrayLike, alpha: float = 0.05) -> CrossedEstimate:
    """t interval and two-sided p of the mean of complete grids ``d[..., seed, subject]`` (vectorised).

    Var(mean) = sigma_seed^2/S + sigma_subject^2/J + sigma_e^2/(SJ) = (MS_seed + MS_subject - MS_e)/(SJ)
    (method of moments; Clark 1973, quasi-F). A negative variance component is set to zero, which
    replaces that mean square by MS_e. Degrees of freedom: Satterthwaite (1946, Biometrics Bull.
    2:110-114) for the linear combination of mean squares, capped at the df of its largest term (a
    small-sample guard: Satterthwaite's df overstate the information when one 2-4 df mean square
    dominates; the cap is what brings 3-seed coverage to 95% in the calibration of docs/statistics.md).
    Needs at least 2 seeds and 2 subjects; NaN otherwise.
    """
    d = np.asarray(d, dtype=float)
    n_seeds, n_subjects = d.shape[-2:]
    mean = d.mean(axis=(-2, -1))
    if n_seeds < 2 or n_subjects < 2:
        nan = np.full_like(mean, np.nan)
        return CrossedEstimate(mean, nan, nan, nan, nan, nan, nan, nan, nan)
    ms_a, ms_b, ms_e = mean_squares(d)
    total, df = _combination(ms_a, ms_b, ms_e, n_seeds, n_subjects)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(total / (n_seeds * n_subjects))
        t = stats.t.ppf(1 - alpha / 2, df)
        p = np.where(se > 0, 2 * stats.t.sf(np.abs(mean) / se, df), np.where(mean == 0, 1.0, 0.0))
    return CrossedEstimate(mean, se, df, mean - t * se, mean + t * se, p, ms_a, ms_b, ms_e)


def variance_components(ms_seed: float, ms_subject: float, ms_resid: float, n_seeds: int, n_subjects: int) -> dict:
    """ANOVA (method-of-moments) variance components, negatives set to zero."""
    # E[MS_seed] = s_e + J s_a, E[MS_subject] = s_e + S s_b, E[MS_e] = s_e (Searle et al. 1992, Sec. 4.5).
    return {
        "seed": max(0.0, (ms_seed - ms_resid) / n_subjects),
        "subject": max(0.0, (ms_subject - ms_resid) / n_seeds),
        "resid": max(0.0, ms_resid),
    }


def power(components: dict, delta: float, n_seeds: int, n_subjects: int, alpha: float = 0.05) -> float:
    """Power of the crossed-model t test to detect a mean difference ``delta``, from variance components."""
    s, j = n_seeds, n_subjects
    var = components["seed"] / s + components["subject"] / j + components["resid"] / (s * j)
    if var <= 0:
        return 1.0 if delta else alpha
    # Expected mean squares, their Satterthwaite df (as in crossed_interval), then the noncentral t.
    ms_a = components["resid"] + j * components["seed"]
    ms_b = components["resid"] + s * components["subject"]
    ms_e = components["resid"]
    df = float(_combination(ms_a, ms_b, ms_e, s, j)[1])
    crit = stats.t.ppf(1 - alpha / 2, df)
    ncp = abs(delta) / math.sqrt(var)
    # Power of a two-sided t test: P(|T'| > t_crit) with T' ~ noncentral t(df, ncp) (Cohen 1988, Ch. 2).
    return float(stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp))


def _combination(ms_a, ms_b, ms_e, n_seeds: int, n_subjects: int) -> tuple[np.ndarray, np.ndarray]:
    """sum_k c_k MS_k (variance components truncated at zero) and its capped Satterthwaite df."""
    ms_a, ms_b, ms_e = np.asarray(ms_a, float), np.asarray(ms_b, float), np.asarray(ms_e, float)
    c_a = (ms_a > ms_e).astype(float)
    c_b = (ms_b > ms_e).astype(float)
    # max(MS_a, MS_e) + max(MS_b, MS_e) - MS_e: a negative component is zero, its MS replaced by MS_e.
    terms = np.stack([c_a * ms_a, c_b * ms_b, (1.0 - c_a - c_b) * ms_e])
    total = terms.sum(axis=0)
    dfs = np.array([n_seeds - 1, n_subjects - 1, (n_seeds - 1) * (n_subjects - 1)], dtype=float)
    dfs = dfs.reshape((3,) + (1,) * total.ndim)
    with np.errstate(divide="ignore", invalid="ignore"):
        # nu = (sum c_k MS_k)^2 / sum (c_k MS_k)^2 / df_k (Satterthwaite 1946, Eq. 1).
        df = total**2 / (terms**2 / dfs).sum(axis=0)
    largest = np.take_along_axis(np.broadcast_to(dfs, terms.shape), np.argmax(terms, axis=0)[None], 0)[0]
    return total, np.where(total > 0, np.minimum(df, largest), np.inf)


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


def min_kendall_p(n: int) -> float:
    """Smallest two-sided p of the exact Kendall tau test on ``n`` untied pairs."""
    # All n! orderings are equally likely under H0; tau = +-1 are the extremes (Kendall 1938, Biometrika 30).
    return min(1.0, 2.0 / math.factorial(n))


# Fewer points than this cannot reach p < 0.05 in the exact two-sided Kendall test (2/4! > 0.05): 5.
MIN_KENDALL_N = next(n for n in range(2, 20) if min_kendall_p(n) <= 0.05)


def block_ranks(blocks: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Rank the methods (columns) within each block (row): 1 = best, ties share the average rank."""
    # Ranking per data set, average ranks for ties (Demsar 2006, JMLR 7, Sec. 3.2.2).
    return stats.rankdata(-blocks if higher_is_better else blocks, axis=1)


# Why ``iman_davenport`` has no F: chi2 reaches its maximum N(k-1) exactly when every unit ranks the methods alike.
F_UNDEFINED = "Iman–Davenport F undefined: every unit ranks the methods the same way"


def iman_davenport(chi2: float, n: int, k: int) -> tuple[float, float]:
    """Iman-Davenport F from Friedman's chi-square on N blocks and k methods, and its p-value.

    NaN, NaN when the denominator N(k-1) - chi2 is 0 (``F_UNDEFINED``): F is not a number there, not infinite.
    """
    denominator = n * (k - 1) - chi2
    if denominator <= 1e-9 * n * (k - 1):  # chi2 = N(k-1) up to rounding
        return math.nan, math.nan
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


@dataclass(frozen=True)
class Equivalence:
    """Two one-sided tests of |mu| >= margin on a crossed estimate (arrays, like ``CrossedEstimate``)."""

    low: np.ndarray  # the (1 - 2 alpha) interval: TOST at level alpha rejects exactly when it lies in (-m, m)
    high: np.ndarray
    p_value: np.ndarray  # the larger of the two one-sided p-values


def tost(est: CrossedEstimate, margin: float, alpha: float = 0.05) -> Equivalence:
    """Equivalence within +-``margin`` from the same crossed-model mean, SE and df as ``crossed_interval``.

    H0: mu <= -m or mu >= m; p = max(P(T > (mean + m)/SE), P(T > (m - mean)/SE)) with T ~ t(df); the test
    at level alpha rejects iff the (1 - 2 alpha) interval lies inside (-m, m).
    Two one-sided tests (TOST): Schuirmann 1987, J Pharmacokinet Biopharm 15:657-680.
    SE = 0: p is 0 when |mean| < m, else 1. NaN where the SE is NaN (1 seed or 1 subject).
    """
    mean, se, df = np.asarray(est.mean, float), np.asarray(est.se, float), np.asarray(est.df, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = stats.t.ppf(1 - alpha, df)
        p_lower = stats.t.sf((mean + margin) / se, df)  # H0: mu <= -m
        p_upper = stats.t.sf((margin - mean) / se, df)  # H0: mu >= m
        p = np.where(se > 0, np.maximum(p_lower, p_upper), np.where(np.abs(mean) < margin, 0.0, 1.0))
    p = np.where(np.isnan(se), np.nan, p)
    return Equivalence(mean - t * se, mean + t * se, p)


def verdicts(
    mean_diff: ArrayLike,
    p_holm: ArrayLike,
    n_seeds: ArrayLike,
    alpha: float,
    higher_is_better: bool,
    words: tuple,
    p_tost_holm: ArrayLike = np.nan,
) -> np.ndarray:
    """Vectorised ``verdict``: one word per row (the leaderboard and the calibration use this one rule)."""
    mean, p, p_eq = np.broadcast_arrays(*(np.asarray(x, float) for x in (mean_diff, p_holm, p_tost_holm)))
    enough = np.broadcast_to(np.asarray(n_seeds) >= MIN_SEEDS, mean.shape)
    with np.errstate(invalid="ignore"):
        differs = enough & (p < alpha)  # NaN compares False
        equivalent = enough & ~differs & (p_eq < alpha)
        ahead = (mean > 0) == higher_is_better
    out = np.full(mean.shape, "inconclusive", dtype=object)
    out[equivalent] = "equivalent"
    out[differs & ahead] = words[1]
    out[differs & ~ahead] = words[0]
    return out


def verdict(
    mean_diff: float,
    p_holm: float,
    n_seeds: int,
    alpha: float,
    higher_is_better: bool,
    words: tuple,
    p_tost_holm: float = math.nan,
) -> str:
    """``words[0]`` (worse) / ``words[1]`` (better) when the Holm p < alpha with enough seeds; else
    ``equivalent`` when the Holm-adjusted TOST p < alpha with enough seeds; else ``inconclusive``."""
    return str(verdicts(mean_diff, p_holm, n_seeds, alpha, higher_is_better, words, p_tost_holm)[()])
