"""The leaderboard's estimator section: τ, weighted τ, AUROC and AP against independent transcriptions, the
bootstrap over seeds, the 8-transfer rule, the map table and the CSVs/page of a built leaderboard."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_store, run_build
from scipy import stats as sps
from sklearn.metrics import average_precision_score, roc_auc_score

from benchmarks.core.schema import ESTIMATES_DIR
from leaderboard.estimators import MIN_TRANSFERS, kendall_tau_b, weighted_tau


def _plain_weighted_tau(x: np.ndarray, y: np.ndarray) -> float:
    """Vigna 2015 written out: hyperbolic additive weights over the decreasing lexicographic rank by (x, y), and
    by (y, x), averaged; an O(n^2) double loop."""

    def one(a: np.ndarray, b: np.ndarray) -> float:
        order = sorted(range(len(a)), key=lambda i: (a[i], b[i]), reverse=True)
        rank = {i: r for r, i in enumerate(order)}
        num = da = db = 0.0
        for i in range(len(a)):
            for j in range(i + 1, len(a)):
                w = 1 / (rank[i] + 1) + 1 / (rank[j] + 1)
                sa, sb = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
                num += sa * sb * w
                da += sa * sa * w
                db += sb * sb * w
        return num / np.sqrt(da * db)

    return (one(x, y) + one(y, x)) / 2


def _plain_auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a risk pixel > score of a safe pixel) + P(equal) / 2, over every pair."""
    pos, neg = score[positive], score[~positive]
    greater = (pos[:, None] > neg[None, :]).mean()
    equal = (pos[:, None] == neg[None, :]).mean()
    return float(greater + equal / 2)


def _plain_ap(score: np.ndarray, positive: np.ndarray) -> float:
    """Σ over distinct thresholds t, descending, of (recall(t) - recall(previous t)) · precision(t)."""
    ap, last_recall = 0.0, 0.0
    for t in sorted(set(score.tolist()), reverse=True):
        chosen = score >= t
        recall = positive[chosen].sum() / positive.sum()
        ap += (recall - last_recall) * positive[chosen].mean()
        last_recall = recall
    return float(ap)


@pytest.mark.parametrize("n", [8, 13, 30])
def test_kendall_and_weighted_tau_match_scipy_and_a_plain_transcription(n: int) -> None:
    rng = np.random.default_rng(n)
    for _ in range(20):
        x, y = rng.normal(size=n), rng.normal(size=n)
        assert kendall_tau_b(x, y) == pytest.approx(sps.kendalltau(x, y).statistic, abs=1e-12)
        expected = sps.weightedtau(x, y).statistic
        assert weighted_tau(x, y) == pytest.approx(expected, abs=1e-12)
        assert _plain_weighted_tau(x, y) == pytest.approx(expected, abs=1e-12)
        ties_x, ties_y = rng.integers(0, 4, n).astype(float), rng.integers(0, 3, n).astype(float)
        assert kendall_tau_b(ties_x, ties_y) == pytest.approx(sps.kendalltau(ties_x, ties_y).statistic, abs=1e-12)
        assert kendall_tau_b(ties_x, y) == pytest.approx(sps.kendalltau(ties_x, y).statistic, abs=1e-12)
        assert weighted_tau(ties_x, y) == pytest.approx(sps.weightedtau(ties_x, y).statistic, abs=1e-12)
    rows = rng.normal(size=(5, n)), rng.normal(size=(5, n))  # vectorised over rows (bootstrap replicates)
    expected = [sps.weightedtau(a, b).statistic for a, b in zip(*rows)]
    np.testing.assert_allclose(weighted_tau(*rows), expected, atol=1e-12)
    assert np.isnan(kendall_tau_b(np.ones(n), rng.normal(size=n)))


def test_auroc_and_ap_match_sklearn_and_a_plain_transcription() -> None:
    from benchmarks.estimate import auroc, average_precision

    rng = np.random.default_rng(0)
    for size in (20, 200, 1000):
        positive = rng.random(size) < 0.2
        for score in (rng.normal(size=size) + positive, np.round(rng.normal(size=size) + positive, 1)):  # ties
            assert auroc(score, positive) == pytest.approx(roc_auc_score(positive, score), abs=1e-12)
            assert auroc(score, positive) == pytest.approx(_plain_auroc(score, positive), abs=1e-12)
            expected = average_precision_score(positive, score)
            assert average_precision(score, positive) == pytest.approx(expected, abs=1e-12)
            assert average_precision(score, positive) == pytest.approx(_plain_ap(score, positive), abs=1e-12)
    assert np.isnan(auroc(rng.normal(size=5), np.zeros(5, bool)))
    assert np.isnan(average_precision(rng.normal(size=5), np.zeros(5, bool)))


# Ten transfers into one target task, as the dial gives: the finetune - scratch gain falls with the transfer's
# index, and an estimator "good" tracks it while "noise" does not.
N_TRANSFERS, SEEDS, SUBJECTS = 10, 4, 5
SOURCES = tuple(f"t2-S{i}" for i in range(N_TRANSFERS))
GAINS = {f"{s}->t1-GM": 0.10 - 0.02 * i for i, s in enumerate(SOURCES)}
TASKS = {"t1-GM": ("iseg", SOURCES, "cross-modality", "GM", 0.6, "iSeg-")}
METHODS = {"scratch": ("scratch", {}, {"t1-GM": 0.0}), "finetune": ("finetune", {}, GAINS)}


def _estimates(store: Path, transfers: int = N_TRANSFERS, maps: bool = True) -> None:
    """One estimates file per finetune cell of ``store``: scores of 'good' (the gain plus noise) and 'noise', and
    for 'good' map rows of two subjects."""
    cells = pd.concat([pd.read_parquet(p) for p in (store / "cells").glob("*.parquet")])
    finetune = cells[cells["method"] == "finetune"].drop_duplicates("cell_key")
    rng = np.random.default_rng(1)
    keep = sorted(GAINS)[:transfers]
    folder = store / ESTIMATES_DIR
    folder.mkdir(exist_ok=True)
    for cell in finetune[finetune["transfer"].isin(keep)].itertuples():
        common = {"cell_key": cell.cell_key, "seed": cell.seed, "transfer": cell.transfer, "transfer_type": "x"}
        blank = {"subject_id": "", "auroc": np.nan, "ap": np.nan, "n_pixels": 0, "n_risk": 0}
        rows = [
            common
            | blank
            | {"kind": "score", "estimator": "good", "value": GAINS[cell.transfer] + rng.normal(0, 0.005)},
            common | blank | {"kind": "score", "estimator": "noise", "value": rng.normal()},
        ]
        if maps:
            for sid in ("s1", "s2", f"s{3 + cell.seed}"):
                auc = 0.8 + rng.normal(0, 0.02)
                rows.append(
                    common
                    | {"kind": "map", "estimator": "good", "value": np.nan, "subject_id": sid, "auroc": auc}
                    | {"ap": auc / 4, "n_pixels": 1000, "n_risk": 100}
                )
        pd.DataFrame(rows).to_parquet(folder / f"{cell.cell_key}.parquet", index=False)


@pytest.fixture(scope="module")
def dial_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = make_store(
        tmp_path_factory.mktemp("dial") / "results", methods=METHODS, tasks=TASKS, seeds=SEEDS, subjects=SUBJECTS
    )
    _estimates(store)
    out = store.parent / "site"
    assert run_build(store, out) == 0
    return out


def test_tau_section_ranks_a_good_estimator_above_noise_with_bootstrap_intervals(dial_build: Path) -> None:
    taus = pd.read_csv(dial_build / "estimators_transfer.csv").set_index("estimator")
    good, noise = taus.loc["good"], taus.loc["noise"]
    assert good["n_transfers"] == N_TRANSFERS and good["n_seeds"] == SEEDS
    assert good["tau"] > 0.8 and good["tau_low"] <= good["tau"] <= good["tau_high"] and good["tau_low"] > 0.3
    assert good["wtau_low"] <= good["wtau"] <= good["wtau_high"]
    assert noise["tau_low"] < 0 < noise["tau_high"]  # an estimator of no information: the interval covers 0
    scores = pd.read_csv(dial_build / "estimators_scores.csv")
    part = scores[scores["estimator"] == "good"].sort_values("transfer")
    assert kendall_tau_b(part["score"].to_numpy(), part["gain"].to_numpy()) == pytest.approx(good["tau"])
    page = (dial_build / "index.html").read_text()
    assert 'id="estimators-transfer"' in page and "Vigna 2015" in page and "Agostinelli" in page
    assert "Transferability estimators: score vs realised gain" in (dial_build / "leaderboard.md").read_text()


def test_tau_interval_is_the_seed_bootstrap_written_plainly(dial_build: Path, tmp_path: Path) -> None:
    """Recompute the 'good' interval with a loop over replicates, scipy's τ and the same seeded draw."""
    from leaderboard.estimators import BOOT_SEED, N_BOOT

    scores = pd.read_csv(dial_build / "estimators_scores.csv")  # per-transfer means only: rebuild per seed
    assert set(scores["estimator"]) == {"good", "noise"}
    store = dial_build.parent / "results"
    est = pd.concat([pd.read_parquet(p) for p in (store / ESTIMATES_DIR).glob("*.parquet")])
    est = est[(est["kind"] == "score") & (est["estimator"] == "good")]
    score = est.pivot_table(index="transfer", columns="seed", values="value").sort_index()
    cells = pd.concat([pd.read_parquet(p) for p in (store / "cells").glob("*.parquet")])
    dice = cells.pivot_table(index=["target_task", "seed", "subject_id"], columns="transfer", values="dice")
    gain = pd.DataFrame(
        {t: (dice[t] - dice["scratch->t1-GM"]).groupby(level="seed").mean() for t in score.index}
    ).T.sort_index()
    draw = np.random.default_rng(BOOT_SEED).integers(0, SEEDS, size=(N_BOOT, SEEDS))
    taus = [sps.kendalltau(score.to_numpy()[:, d].mean(1), gain.to_numpy()[:, d].mean(1)).statistic for d in draw]
    taus = np.asarray(taus)
    low, high = np.percentile(taus[np.isfinite(taus)], [2.5, 97.5])
    row = pd.read_csv(dial_build / "estimators_transfer.csv").set_index("estimator").loc["good"]
    assert (row["tau_low"], row["tau_high"]) == pytest.approx((low, high), abs=1e-12)


def test_map_section_t_interval_over_subjects(dial_build: Path) -> None:
    maps = pd.read_csv(dial_build / "estimators_maps.csv")
    assert len(maps) == N_TRANSFERS and set(maps["estimator"]) == {"good"}
    row = maps.iloc[0]
    assert row["n_subjects"] == 2 + SEEDS and row["n_seeds"] == SEEDS and row["risk_share"] == pytest.approx(0.1)
    store = dial_build.parent / "results"
    est = pd.concat([pd.read_parquet(p) for p in (store / ESTIMATES_DIR).glob("*.parquet")])
    mine = est[(est["kind"] == "map") & (est["transfer"] == row["transfer"])]
    per_subject = mine.groupby("subject_id")["auroc"].mean()
    low, high = np.clip(sps.t.interval(0.95, len(per_subject) - 1, per_subject.mean(), sps.sem(per_subject)), 0, 1)
    assert (row["auroc"], row["auroc_low"], row["auroc_high"]) == pytest.approx((per_subject.mean(), low, high))
    assert 'id="estimators-maps"' in (dial_build / "index.html").read_text()


def test_fewer_than_eight_transfers_say_so_and_unmatched_estimates_are_named(tmp_path: Path) -> None:
    store = make_store(tmp_path / "results", methods=METHODS, tasks=TASKS, seeds=2, subjects=3)
    _estimates(store, transfers=MIN_TRANSFERS - 1, maps=False)
    stray = pd.read_parquet(next((store / ESTIMATES_DIR).glob("*.parquet"))).assign(cell_key="not-a-cell")
    stray.to_parquet(store / ESTIMATES_DIR / "not-a-cell.parquet", index=False)
    assert run_build(store, tmp_path / "site") == 0
    taus = pd.read_csv(tmp_path / "site" / "estimators_transfer.csv")
    assert taus["tau"].isna().all() and taus["note"].str.contains(f"shown from {MIN_TRANSFERS}").all()
    assert not (tmp_path / "site" / "estimators_maps.csv").exists()
    assert "1 estimate file(s) left out" in (tmp_path / "site" / "index.html").read_text()


def test_store_reader_skips_estimate_files_and_a_store_without_them_has_no_section(tmp_path: Path) -> None:
    from leaderboard import load_store

    store = make_store(tmp_path / "results", methods=METHODS, tasks=TASKS, seeds=2, subjects=3)
    n_rows = len(load_store(store))
    _estimates(store, maps=False)
    assert len(load_store(store)) == n_rows and not load_store(store).attrs["skipped"]
    (store / ESTIMATES_DIR).joinpath("broken.parquet").write_bytes(b"PAR1 not really")
    assert run_build(store, tmp_path / "site") == 0  # an unreadable estimates file is named and skipped
    assert "skipped unreadable estimates file" in (tmp_path / "site" / "index.html").read_text()
    bare = make_store(tmp_path / "bare", methods=METHODS, tasks=TASKS, seeds=2, subjects=3)
    assert run_build(bare, tmp_path / "bare-site") == 0
    assert not list((tmp_path / "bare-site").glob("estimators_*.csv"))
    assert "estimators-transfer" not in (tmp_path / "bare-site" / "index.html").read_text()
    assert json.loads((tmp_path / "bare-site" / "omnibus.json").read_text())
