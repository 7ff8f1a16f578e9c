"""The `equivalent` verdict: TOST within +-margin on the crossed model, its rule, its size and power, its option."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import make_store, run_build
from scipy import stats as sps
from test_leaderboard_stats import crossed_parts, holm_by_family_reference

import leaderboard
from benchmarks.core.options import DEFAULT_MARGIN
from leaderboard import stats
from leaderboard.simulate import equivalence_calibration

WORDS = ("worse", "better")


def tost_reference(d: np.ndarray, margin: float, alpha: float) -> tuple[float, float, float]:
    """(1 - 2 alpha) interval and TOST p written out: two one-sided t tests on the hand-computed mean, SE, df."""
    grand, se, nu = crossed_parts(d)
    p_above = sps.t.sf((grand + margin) / se, nu)  # H0: mu <= -margin
    p_below = sps.t.cdf((grand - margin) / se, nu)  # H0: mu >= +margin
    q = sps.t.ppf(1 - alpha, nu)
    return grand - q * se, grand + q * se, max(p_above, p_below)


def test_tost_matches_an_independent_transcription_on_random_grids() -> None:
    rng = np.random.default_rng(7)
    decisions = []
    for _ in range(150):
        n_s, n_j = int(rng.integers(2, 9)), int(rng.integers(2, 25))
        seed_sd, subject_sd, resid_sd = rng.uniform(0.001, 0.04, 3)
        d = (
            rng.normal(0, 0.02)
            + rng.normal(0, seed_sd, (n_s, 1))
            + rng.normal(0, subject_sd, (1, n_j))
            + rng.normal(0, resid_sd, (n_s, n_j))
        )
        margin, alpha = float(rng.uniform(0.005, 0.06)), float(rng.choice([0.01, 0.05, 0.1]))
        eq = stats.tost(stats.crossed_interval(d, alpha), margin, alpha)
        low, high, p = tost_reference(d, margin, alpha)
        assert (float(eq.low), float(eq.high), float(eq.p_value)) == pytest.approx((low, high, p), rel=1e-7, abs=1e-12)
        # Schuirmann: TOST at level alpha rejects exactly when the (1 - 2 alpha) interval lies inside (-m, m).
        assert (p < alpha) == (-margin < low and high < margin)
        decisions.append(p < alpha)
    assert 10 < sum(decisions) < 140  # both outcomes exercised


def test_tost_with_seed_variance_only_is_two_scipy_one_sided_t_tests() -> None:
    seeds = np.array([0.004, -0.003, 0.006, 0.001, -0.002])
    d = seeds[:, None] + np.zeros((5, 8))
    d[0, 0] += 1e-9  # not exactly additive
    eq = stats.tost(stats.crossed_interval(d), 0.01)
    means = d.mean(axis=1)
    lower = sps.ttest_1samp(means, -0.01, alternative="greater").pvalue
    upper = sps.ttest_1samp(means, 0.01, alternative="less").pvalue
    assert float(eq.p_value) == pytest.approx(max(lower, upper), rel=1e-4)


@pytest.mark.parametrize(
    ("value", "margin", "expected"),
    [  # powers of two: the grid's mean squares are exactly 0, so the SE is exactly 0
        (2**-7, 2**-6, 0.0),  # no variance, inside the margin: equivalent for sure
        (2**-6, 2**-6, 1.0),  # on the margin: the null |mu| >= m holds
        (-(2**-6), 2**-6, 1.0),
        (2**-5, 2**-6, 1.0),
    ],
)
def test_tost_without_variance(value: float, margin: float, expected: float) -> None:
    eq = stats.tost(stats.crossed_interval(np.full((3, 4), value)), margin)
    assert float(eq.p_value) == expected


def test_tost_mean_on_the_margin_is_p_one_half_and_one_unit_is_nan() -> None:
    d = np.array([[0.0, 0.01, -0.01], [0.01, 0.0, 0.0], [-0.01, -0.01, 0.01]])
    d = d - d.mean() + 0.02
    assert float(stats.tost(stats.crossed_interval(d), 0.02).p_value) == pytest.approx(0.5)
    assert np.isnan(stats.tost(stats.crossed_interval(np.zeros((1, 5))), 0.02).p_value)


@pytest.mark.parametrize(
    ("diff", "p_holm", "seeds", "p_tost_holm", "higher", "expected"),
    [
        (0.005, 0.01, 5, 0.001, True, "better"),  # a difference shown wins over equivalence
        (-0.005, 0.01, 5, 0.001, True, "worse"),
        (0.005, 0.30, 5, 0.001, True, "equivalent"),
        (0.005, 0.30, 5, 0.05, True, "inconclusive"),  # p = alpha is not below alpha
        (0.005, 0.30, 2, 0.001, True, "inconclusive"),  # fewer than 3 seeds: never a verdict
        (0.005, 0.30, 5, float("nan"), True, "inconclusive"),  # no TOST (HD95, margin off, one unit)
        (0.005, float("nan"), 5, float("nan"), False, "inconclusive"),
    ],
)
def test_verdict_rule(diff, p_holm, seeds, p_tost_holm, higher, expected) -> None:
    assert stats.verdict(diff, p_holm, seeds, 0.05, higher, WORDS, p_tost_holm) == expected
    vector = stats.verdicts([diff, diff], [p_holm, p_holm], seeds, 0.05, higher, WORDS, [p_tost_holm, 1.0])
    assert vector[0] == expected


def _close_pair(root: Path, seeds: int, shift: float = 0.0) -> Path:
    """finetune and trm on one target task, trm = finetune + shift, little seed or subject noise in the difference."""
    methods = {"finetune": ("finetune", {}, {"t1-GM": 0.0}), "trm": ("trm", {"alpha": 1}, {"t1-GM": shift})}
    tasks = {"t1-GM": ("iseg", "t2-GM", "cross-modality", "GM", 0.83, "iSeg-")}
    return make_store(root, methods=methods, tasks=tasks, seeds=seeds, interaction_sd=0.002, noise_sd=0.003)


@pytest.mark.parametrize(("seeds", "expected"), [(5, "equivalent"), (2, "inconclusive")])
def test_compare_says_equivalent_only_with_three_seeds(tmp_path: Path, seeds: int, expected: str):
    row = leaderboard.compare(leaderboard.load_store(_close_pair(tmp_path / "r", seeds)), "finetune").iloc[0]
    assert row["verdict"] == expected and row["margin"] == DEFAULT_MARGIN and row["p_tost"] >= 0
    assert row["ci_low"] < row["tost_low"] and row["tost_high"] < row["ci_high"]  # the 90% inside the 95%
    if seeds >= 3:
        assert -DEFAULT_MARGIN < row["tost_low"] < row["tost_high"] < DEFAULT_MARGIN and row["p_tost_holm"] < 0.05


def test_compare_margin_option_holm_and_hd95(tmp_path: Path) -> None:
    frame = leaderboard.load_store(_close_pair(tmp_path / "r", 5))
    assert leaderboard.compare(frame, "finetune", margin=0.05).iloc[0]["verdict"] == "equivalent"
    assert leaderboard.compare(frame, "finetune", margin=0.001).iloc[0]["verdict"] == "inconclusive"
    shifted = leaderboard.load_store(_close_pair(tmp_path / "s", 5, 0.012))
    row = leaderboard.compare(shifted, "finetune", margin=0.05).iloc[0]
    assert row["verdict"] == "better" and row["p_tost"] < 0.05  # within the margin, but a difference shown comes first
    off = leaderboard.compare(frame, "finetune", margin=None).iloc[0]
    assert np.isnan(off["p_tost"]) and off["verdict"] != "equivalent"
    hd95 = leaderboard.compare(frame, "finetune", metric="hd95")
    assert hd95[["margin", "p_tost", "p_tost_holm"]].isna().all().all() and "equivalent" not in set(hd95["verdict"])
    many = leaderboard.compare(leaderboard.load_store(make_store(tmp_path / "m", seeds=4)), "finetune")
    families = holm_by_family_reference(many.to_dict("records"), "p_tost")
    np.testing.assert_allclose(many["p_tost_holm"], families)  # the same families as p_holm
    assert len(many) > 2 and (many["p_tost_holm"] >= many["p_tost"]).all()


def test_page_and_csv_show_the_margin(tmp_path: Path) -> None:
    assert run_build(_close_pair(tmp_path / "r", 5), tmp_path / "site", "--margin", "0.03") == 0
    csv = pd.read_csv(tmp_path / "site" / "comparisons.csv")
    assert csv["verdict"].tolist() == ["equivalent"] and csv["margin"].tolist() == [0.03]
    assert {"tost_low", "tost_high", "p_tost", "p_tost_holm"} <= set(csv.columns)
    html = (tmp_path / "site" / "index.html").read_text()
    assert "equivalence margin ±0.03 Dice" in html and "90% CI (TOST)" in html and "equivalent: not signif" in html
    assert "†" not in (tmp_path / "site" / "leaderboard.md").read_text().split("| trm ")[1].split("\n")[0]


def _snapshot(folder: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.mark.parametrize("value", ["0", "-0.02", "abc", "1.5", "nan"])
def test_bad_margin_on_the_leaderboard(tmp_path: Path, capsys, value: str) -> None:
    results = _close_pair(tmp_path / "r", 3)
    before = _snapshot(results)
    with pytest.raises(SystemExit) as exc:
        run_build(results, tmp_path / "site", f"--margin={value}")
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "--margin" in err[0] and "must be a number > 0" in err[0]
    assert not (tmp_path / "site").exists() and _snapshot(results) == before
    assert sorted(os.listdir(tmp_path)) == ["r"]


@pytest.mark.parametrize("value", ["0", "-1", "x"])
def test_bad_margin_on_the_runner(tmp_path: Path, capsys, value: str) -> None:
    from benchmarks.cli import main

    out, cache = tmp_path / "out", tmp_path / "cache"
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(out), "--cache-dir", str(cache), "--steps", "2", f"--margin={value}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("error: argument --margin")
    assert not out.exists() and not cache.exists()


def test_run_summary_shows_equivalence_and_passes_the_margin_on(tmp_path: Path, summarise) -> None:
    from benchmarks.summary import _footer

    store = _close_pair(tmp_path / "r", 5)
    assert "; equivalent within ±0.03]" in summarise(store, margin=0.03)
    assert "; inconclusive]" in summarise(store, margin=0.001)
    rows = leaderboard.load_store(store)
    keys = set(rows["cell_key"])
    cells = [SimpleNamespace(key=k, source_task="t2-GM", target_task="t1-GM", suite="default") for k in keys]
    text = "\n".join(_footer(rows, cells, store, False, 0.03))
    assert "within ±0.03 Dice (--margin" in text and text.endswith("--margin 0.03")
    assert "--margin" not in _footer(rows, cells, store, False, DEFAULT_MARGIN)[-1]


@pytest.fixture(scope="module")
def calibration() -> pd.DataFrame:
    designs = ((3, 24), (5, 8), (5, 24), (10, 60))
    return equivalence_calibration(2000, margins=(DEFAULT_MARGIN, 0.05), designs=designs, rng_seed=1)


def test_size_at_the_margin_is_at_most_alpha(calibration: pd.DataFrame) -> None:
    # True difference -margin or +margin: 'equivalent' is a false claim; TOST's size is alpha.
    slack = 3 * np.sqrt(0.05 * 0.95 / 2000)  # Monte-Carlo: 3 standard errors of a rate of 5% over 2000 stores
    for r in calibration.itertuples():
        assert max(r.size_low, r.size_high) <= 0.05 + slack, r


def test_power_at_no_difference(calibration: pd.DataFrame) -> None:
    rate = calibration.set_index(["regime", "seeds", "subjects", "margin"])["power"]
    assert (rate <= 0.97).all()  # at most 1 - type-I error: a shown difference comes first
    assert rate[("subject-dominant", 10, 60, DEFAULT_MARGIN)] > 0.7  # many units: equivalence within 0.02
    assert rate[("subject-dominant", 5, 24, 0.05)] > 0.9 and rate[("seed-dominant", 10, 60, 0.05)] > 0.85
    assert rate[("subject-dominant", 5, 8, DEFAULT_MARGIN)] < rate[("subject-dominant", 5, 24, DEFAULT_MARGIN)]
