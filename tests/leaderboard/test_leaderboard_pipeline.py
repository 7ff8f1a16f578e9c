"""Store -> blocks -> tests, checked against scipy on arrays paired by hand from the raw rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_build
from scipy import stats as sps

from leaderboard.stats import holm


def hand_blocks(results: Path, metric: str = "dice") -> pd.DataFrame:
    """Blocks paired by plain dictionaries: (task, subject) -> method -> seed-mean, on common seeds."""
    rows = pd.concat(pd.read_parquet(p) for p in sorted(results.rglob("*.parquet")))
    rows = rows[rows["status"] == "ok"]
    names = {"{}": "", '{"alpha": 0.01}': "", '{"k": 1}': ""}
    values: dict[tuple, dict[str, float]] = {}
    for r in rows.itertuples():
        name = r.method if r.method_params in names else f"{r.method}(alpha={json.loads(r.method_params)['alpha']})"
        values.setdefault((r.target_task, r.subject_id, r.seed), {})[name] = getattr(r, metric)
    methods = sorted({m for v in values.values() for m in v})
    complete = {k: v for k, v in values.items() if len(v) == len(methods)}
    blocks: dict[tuple, list[list[float]]] = {}
    for (task, subject, _seed), by_method in complete.items():
        blocks.setdefault((task, subject), []).append([by_method[m] for m in methods])
    return pd.DataFrame({k: np.mean(v, axis=0) for k, v in blocks.items()}, index=methods).T.sort_index()


@pytest.fixture(scope="module")
def blocks(default_store: Path) -> pd.DataFrame:
    return hand_blocks(default_store)


def test_wilcoxon_on_blocks_matches_scipy_on_hand_paired_arrays(default_build: Path, blocks: pd.DataFrame) -> None:
    comparisons = pd.read_csv(default_build / "comparisons.csv", keep_default_na=False, na_values=[""])
    assert len(blocks) == 12
    for row in comparisons.itertuples():
        part = blocks if row.scope == "all" else blocks.loc[row.scope]
        expected = sps.wilcoxon(part[row.method], part["finetune"])
        assert row.n_blocks == len(part)
        assert row.statistic == pytest.approx(expected.statistic)
        assert row.mean_diff == pytest.approx((part[row.method] - part["finetune"]).mean())
        if len(part) > 5:
            assert row.p_value == pytest.approx(expected.pvalue)


def test_holm_over_each_scope_type(default_build: Path) -> None:
    comparisons = pd.read_csv(default_build / "comparisons.csv")
    for is_all in (True, False):
        family = comparisons[(comparisons["scope"] == "all") == is_all]
        np.testing.assert_allclose(family["p_holm"], holm(family["p_value"].to_numpy()))


def test_friedman_and_iman_davenport(default_build: Path, blocks: pd.DataFrame) -> None:
    omnibus = json.loads((default_build / "omnibus.json").read_text())
    chi2, p = sps.friedmanchisquare(*[blocks[m] for m in blocks.columns])
    n, k = blocks.shape
    assert (omnibus["N"], omnibus["k"], omnibus["n_seeds"]) == (n, k, 4)  # t1-GM lost seed 3 (failed cell)
    assert omnibus["friedman_chi2"] == pytest.approx(chi2)
    assert omnibus["friedman_p"] == pytest.approx(p)
    f = (n - 1) * chi2 / (n * (k - 1) - chi2)
    assert omnibus["iman_davenport_F"] == pytest.approx(f)
    assert omnibus["iman_davenport_p"] == pytest.approx(sps.f.sf(f, k - 1, (k - 1) * (n - 1)))
    q = sps.studentized_range.ppf(0.95, k, np.inf) / np.sqrt(2)
    assert omnibus["nemenyi_cd"] == pytest.approx(q * np.sqrt(k * (k + 1) / (6 * n)))
    ranks = sps.rankdata(-blocks.to_numpy(), axis=1).mean(axis=0)
    assert omnibus["mean_ranks"] == pytest.approx(dict(zip(blocks.columns, ranks)), abs=1e-6)


def test_leaderboard_csv_matches_hand_blocks(default_build: Path, blocks: pd.DataFrame) -> None:
    table = pd.read_csv(default_build / "leaderboard.csv")
    assert list(table.columns) == [
        "method",
        "target_task",
        "transfer_type",
        "n_blocks",
        "mean",
        "std",
        "median",
        "mean_rank",
    ]
    for row in table.itertuples():
        values = blocks.loc[row.target_task, row.method]
        assert (row.n_blocks, row.mean, row.std, row.median) == pytest.approx(
            (len(values), values.mean(), values.std(ddof=1), values.median())
        )
    assert set(table["transfer_type"]) == {"cross-group", "cross-modality"}


def test_comparison_columns_and_effect_size(default_build: Path, blocks: pd.DataFrame) -> None:
    comparisons = pd.read_csv(default_build / "comparisons.csv")
    assert list(comparisons.columns[:12]) == [
        "method",
        "control",
        "scope",
        "n_blocks",
        "n_seeds",
        "mean_diff",
        "ci_low",
        "ci_high",
        "statistic",
        "p_value",
        "p_holm",
        "effect_size",
    ]
    row = comparisons[(comparisons["method"] == "bss") & (comparisons["scope"] == "all")].iloc[0]
    d = (blocks["bss"] - blocks["finetune"]).to_numpy()
    ranks = sps.rankdata(np.abs(d))
    assert row.effect_size == pytest.approx((ranks[d > 0].sum() - ranks[d < 0].sum()) / ranks.sum())
    assert (comparisons["ci_low"] <= comparisons["mean_diff"] + 1e-3).all()
    assert (comparisons["mean_diff"] <= comparisons["ci_high"] + 1e-3).all()


def test_scratch_is_paired_on_target_task_seed_and_subject(default_build: Path, blocks: pd.DataFrame) -> None:
    negative = pd.read_csv(default_build / "negative_transfer.csv")
    row = negative[(negative["method"] == "finetune") & (negative["target_task"] == "02-t1-TC")].iloc[0]
    part = blocks.loc["02-t1-TC"]
    assert row.mean_diff == pytest.approx((part["finetune"] - part["scratch"]).mean())
    assert set(negative["verdict"]) <= {"negative", "positive", "inconclusive"}


@pytest.mark.parametrize(("seeds", "expected"), [(2, "inconclusive"), (5, "negative")])
def test_verdict_needs_three_seeds(store_factory, tmp_path: Path, seeds: int, expected: str) -> None:
    methods = {
        "scratch": ("scratch", {}, {"t1-GM": 0.0}),
        "finetune": ("finetune", {}, {"t1-GM": -0.08}),
    }
    tasks = {"t1-GM": ("iseg", "t2-GM", "cross-modality", "GM", 0.83, "iSeg-")}
    store = store_factory(methods=methods, tasks=tasks, seeds=seeds, interaction_sd=0.005)
    assert run_build(store, tmp_path / "out", "--n-boot", "500") == 0
    negative = pd.read_csv(tmp_path / "out" / "negative_transfer.csv")
    assert negative["verdict"].tolist() == [expected]
    assert negative["ci_high"].iloc[0] < 0  # the effect is large either way
    markdown = (tmp_path / "out" / "leaderboard.md").read_text()
    assert ("cannot establish a difference" in markdown) == (seeds < 3)


def test_hd95_flips_direction(store_factory, tmp_path: Path) -> None:
    store = store_factory(seeds=4)
    assert run_build(store, tmp_path / "out", "--metric", "hd95", "--n-boot", "300") == 0
    table = pd.read_csv(tmp_path / "out" / "leaderboard.csv")
    best = table.loc[table.groupby("target_task")["mean"].idxmin()]
    assert (best["mean_rank"] == table.groupby("target_task")["mean_rank"].min().values).all()
    negative = pd.read_csv(tmp_path / "out" / "negative_transfer.csv")
    worse = negative[negative["verdict"] == "negative"]
    assert (worse["ci_low"] > 0).all() and not worse.empty  # higher HD95 is worse
    markdown = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "lower is better" in markdown
    assert "**" + f"{best[best['target_task'] == 't1-GM']['mean'].iloc[0]:.2f}" in markdown
