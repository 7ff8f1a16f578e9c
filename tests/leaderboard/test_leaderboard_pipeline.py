"""Store -> units -> tests, checked against references built by hand from the raw rows."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import METHODS, TASKS, make_store, run_build
from scipy import stats as sps
from test_leaderboard_stats import crossed_reference, holm_by_family_reference

import leaderboard
from leaderboard.store import variant_names, with_run_defaults

FETS = "fets · monai-unet · K=all · 300 steps"


def hand_grid(results: Path, method: str, control: str, dataset: str, metric: str = "dice") -> np.ndarray:
    """(seed x subject) mean of method - control over each subject's regions and target tasks, by plain dicts."""
    rows = pd.concat(pd.read_parquet(p) for p in sorted(results.rglob("*.parquet")))
    rows = rows[(rows["status"] == "ok") & (rows["dataset"] == dataset)]
    named = {"{}": None, '{"alpha": 0.01}': None, '{"k": 1}': None}
    values: dict[tuple, dict[str, float]] = {}
    for r in rows.itertuples():
        name = r.method if r.method_params in named else f"{r.method}(alpha={json.loads(r.method_params)['alpha']})"
        values.setdefault((r.target_task, r.subject_id, r.region, r.seed), {})[name] = getattr(r, metric)
    diffs: dict[tuple, list[float]] = {}
    for (_task, subject, _region, seed), by in values.items():
        if method in by and control in by:
            diffs.setdefault((seed, subject), []).append(by[method] - by[control])
    seeds = sorted({s for s, _ in diffs})
    subjects = sorted({j for _, j in diffs})
    complete = [s for s in seeds if all((s, j) in diffs for j in subjects)]
    return np.array([[np.mean(diffs[(s, j)]) for j in subjects] for s in complete])


def test_comparisons_match_hand_reference(default_build: Path, default_store: Path) -> None:
    comparisons = pd.read_csv(default_build / "comparisons.csv", keep_default_na=False, na_values=[""])
    assert list(comparisons.columns[:13]) == [
        "setting", "scope", "level", "method", "control", "n_units", "n_seeds",
        "mean_diff", "ci_low", "ci_high", "p_value", "p_holm", "verdict",
    ]  # fmt: skip
    for dataset, transfer in (("fets", "01-t1-TC->02-t1-TC"), ("iseg", "t2-GM->t1-GM")):
        rows = comparisons[comparisons["setting"].str.startswith(dataset)]
        # One transfer per setting: its row is the only one (a pooled row would repeat it with another verdict).
        assert set(zip(rows["scope"], rows["level"])) == {(transfer, "transfer")} and len(rows) == 5
        for row in rows.itertuples():
            grid = hand_grid(default_store, row.method, "finetune", dataset)
            assert (row.n_seeds, row.n_units) == grid.shape
            mean, low, high, p = crossed_reference(grid)
            assert (row.mean_diff, row.ci_low, row.ci_high, row.p_value) == pytest.approx((mean, low, high, p))


def test_holm_within_families_and_verdicts(default_build: Path) -> None:
    for name in ("comparisons.csv", "negative_transfer.csv"):
        frame = pd.read_csv(default_build / name)
        records = frame.to_dict("records")
        np.testing.assert_allclose(frame["p_holm"], holm_by_family_reference(records, "p_value"))
        np.testing.assert_allclose(frame["p_tost_holm"], holm_by_family_reference(records, "p_tost"))
        assert frame.groupby("setting")["p_holm"].count().min() == 5  # each setting its own family of 5 rows
        significant = frame["p_holm"] < 0.05
        equivalent = ~significant & (frame["p_tost_holm"] < 0.05) & (frame["n_seeds"] >= 3)
        assert (frame.loc[equivalent, "verdict"] == "equivalent").all()
        assert (frame.loc[~significant & ~equivalent, "verdict"] == "inconclusive").all()
        words = {"better", "worse"} if name == "comparisons.csv" else {"positive", "negative"}
        assert set(frame.loc[significant, "verdict"]) <= words
        assert (frame["margin"] == 0.02).all()


def test_friedman_over_units(default_build: Path, default_store: Path) -> None:
    # fets has every cell: a unit is a test subject, its seeds averaged; one row per subject.
    rows = pd.concat(pd.read_parquet(p) for p in default_store.rglob("*.parquet"))
    rows = rows[(rows["dataset"] == "fets") & (rows["status"] == "ok")]
    rows = rows.assign(name=rows["method"] + rows["method_params"])
    table = rows.pivot_table(index="subject_id", columns="name", values="dice", aggfunc="mean").to_numpy()
    chi2, p = sps.friedmanchisquare(*table.T)
    omnibus = json.loads((default_build / "omnibus.json").read_text())["settings"][FETS]
    assert (omnibus["N"], omnibus["k"]) == table.shape == (6, 6)
    assert omnibus["friedman_chi2"] == pytest.approx(chi2) and omnibus["friedman_p"] == pytest.approx(p)
    f = (6 - 1) * chi2 / (6 * 5 - chi2)
    assert omnibus["iman_davenport_F"] == pytest.approx(f)


def test_subject_on_three_target_tasks_counts_once(store_factory) -> None:
    tasks = {
        name: ("iseg", f"t2-{name[3:]}", "cross-modality", name[3:], 0.8, "iSeg-")
        for name in ("t1-GM", "t1-WM", "t1-CSF")
    }
    methods = {"finetune": ("finetune", {}, dict.fromkeys(tasks, 0.0)), "trm": ("trm", {}, dict.fromkeys(tasks, 0.02))}
    store = store_factory(tasks=tasks, methods=methods, seeds=3, subjects=4, subject_ids=[f"S{i}" for i in range(4)])
    result = leaderboard.compare(leaderboard.load_store(store), "finetune")
    pooled = result.set_index("scope").loc["all"]
    assert (pooled["n_units"], pooled["n_seeds"], pooled["level"]) == (4, 3, "all")
    # One transfer into each target task: the transfer rows are the target tasks' rows (no pooled copy of them).
    assert set(result["scope"]) == {"all", *(f"{source}->{task}" for task, (_, source, *_) in tasks.items())}


def test_two_learning_rates_are_two_settings(tmp_path: Path) -> None:

    for lr, rng_seed in ((0.01, 0), (0.001, 1)):
        make_store(tmp_path / "r", seeds=3, rng_seed=rng_seed, columns={"lr": lr}, tasks={"t1-GM": TASKS["t1-GM"]})
    result = leaderboard.compare(leaderboard.load_store(tmp_path / "r"), "finetune")
    assert result["setting"].nunique() == 2
    assert all("lr=0.01" in s or "lr=0.001" in s for s in result["setting"])
    assert (result["n_seeds"] == 3).all()  # never pooled: 3 seeds each, not 6 runs averaged


def test_scratch_pairs_with_every_transfer_into_its_target(store_factory) -> None:
    tasks = {"t1-GM": TASKS["t1-GM"]}
    methods = {k: METHODS[k] for k in ("scratch", "finetune")}
    store = store_factory(tasks=tasks, methods=methods, seeds=3)
    frame = leaderboard.load_store(store)
    # Add a second source into the same target: scratch pairs with both transfers.
    extra = frame[frame["method"] == "finetune"].assign(
        transfer="t1-WM->t1-GM",
        source_task="t1-WM",
        cell_key=lambda f: f["cell_key"] + "b",
        dice=lambda f: f["dice"] - 0.1,
    )
    both = pd.concat([frame, extra], ignore_index=True)
    result = leaderboard.compare(both, "scratch").set_index("scope")
    assert result["level"].to_dict() == {"t2-GM->t1-GM": "transfer", "t1-WM->t1-GM": "transfer", "t1-GM": "target"}
    finetune = both[both["method"] == "finetune"]
    sc = both[both["method"] == "scratch"].set_index(["seed", "subject_id"])["dice"]
    pooled = finetune.groupby(["seed", "subject_id"])["dice"].mean()
    assert result.loc["t1-GM", "mean_diff"] == pytest.approx(float((pooled - sc).mean()))
    for transfer, rows in finetune.groupby("transfer"):
        one = rows.set_index(["seed", "subject_id"])["dice"]
        assert result.loc[transfer, "mean_diff"] == pytest.approx(float((one - sc).mean()))


@pytest.mark.parametrize(("seeds", "expected"), [(2, "inconclusive"), (5, "negative")])
def test_verdict_needs_three_seeds(store_factory, tmp_path: Path, seeds: int, expected: str) -> None:
    methods = {"scratch": ("scratch", {}, {"t1-GM": 0.0}), "finetune": ("finetune", {}, {"t1-GM": -0.08})}
    tasks = {"t1-GM": ("iseg", "t2-GM", "cross-modality", "GM", 0.83, "iSeg-")}
    store = store_factory(methods=methods, tasks=tasks, seeds=seeds, interaction_sd=0.005, seed_sd=0.01)
    assert run_build(store, tmp_path / "out") == 0
    negative = pd.read_csv(tmp_path / "out" / "negative_transfer.csv")
    assert negative["verdict"].tolist() == [expected]
    assert negative["mean_diff"].iloc[0] < -0.05
    markdown = (tmp_path / "out" / "leaderboard.md").read_text()
    assert ("cannot establish a difference" in markdown) == (seeds < 3)


def test_hd95_flips_direction(store_factory, tmp_path: Path) -> None:
    store = store_factory(seeds=5, seed_sd=0.005, interaction_sd=0.003)
    assert run_build(store, tmp_path / "out", "--metric", "hd95") == 0
    negative = pd.read_csv(tmp_path / "out" / "negative_transfer.csv")
    better = negative[negative["verdict"] == "positive"]
    assert not better.empty and (better["mean_diff"] < 0).all()  # lower HD95 is better
    assert "lower is better" in (tmp_path / "out" / "leaderboard.md").read_text()


def test_generic_scores_split_trials_and_tuning(store_factory, tmp_path: Path) -> None:
    methods = {k: METHODS[k] for k in ("scratch", "finetune", "trm(alpha=2)")}
    store = store_factory(methods=methods, seeds=3)
    for path in sorted((store / "cells").glob("*.parquet")):
        frame = pd.read_parquet(path)
        frame["my_score"] = frame["leep"] * 2  # a score no code names
        frame["tuned_trials"] = np.where(frame["method"] == "trm", 20, 10)  # every method tuned (its lr too)
        frame.to_parquet(path, index=False)
    val = frame.assign(split="val", dice=0.0, cell_key="valcell")  # a validation row must not count
    val.to_parquet(store / "cells" / "valcell.parquet", index=False)
    assert run_build(store, tmp_path / "o") == 0
    transfer = pd.read_csv(tmp_path / "o" / "transferability.csv")
    assert {"leep", "nce", "my_score", "leep_minus_nce"} <= set(transfer.columns)
    kendall = json.loads((tmp_path / "o" / "omnibus.json").read_text())["transferability_kendall"]
    assert {k["score"] for k in kendall} == {"leep", "nce", "my_score"}
    assert all(k["tau"] is None and "not shown" in k["note"] for k in kendall)  # 1 transfer per setting
    markdown = (tmp_path / "o" / "leaderboard.md").read_text()
    assert "| trm | tuned, 20 trials |" in markdown and "| finetune (control) | tuned, 10 trials |" in markdown
    assert pd.read_csv(tmp_path / "o" / "comparisons.csv")["setting"].nunique() == 2  # fets, iseg: lr is tuned
    assert "validation or tuning-trial row(s) are left out" in markdown
    assert pd.read_csv(tmp_path / "o" / "leaderboard.csv")["mean"].min() > 0.3  # the 0.0 val rows are out


def test_smoke_runs_are_left_out_unless_asked(store_factory, tmp_path: Path) -> None:

    store = store_factory(seeds=3, tasks={"t1-GM": TASKS["t1-GM"]})
    make_store(store, seeds=1, tasks={"t1-GM": TASKS["t1-GM"]}, columns={"smoke": True, "target_steps": 5})
    assert run_build(store, tmp_path / "o") == 0
    comparisons = pd.read_csv(tmp_path / "o" / "comparisons.csv")
    assert comparisons["setting"].nunique() == 1 and "5 steps" not in comparisons["setting"].iloc[0]
    assert "smoke-run cell(s)" in (tmp_path / "o" / "leaderboard.md").read_text()
    assert run_build(store, tmp_path / "o2", "--include-smoke") == 0
    assert pd.read_csv(tmp_path / "o2" / "comparisons.csv")["setting"].nunique() == 2


def test_suites_and_datasets_are_reported_separately_and_filtered(store_factory, tmp_path: Path) -> None:

    store = store_factory(seeds=3, tasks={"t1-GM": TASKS["t1-GM"]})
    make_store(store, seeds=3, tasks={"02-t1-TC": TASKS["02-t1-TC"]}, columns={"suite": "other"}, rng_seed=3)
    assert run_build(store, tmp_path / "all") == 0
    html = (tmp_path / "all" / "index.html").read_text()
    assert 'id="setting-1"' in html and 'id="setting-2"' in html and "suites default, other" in html
    assert run_build(store, tmp_path / "one", "--suite", "other") == 0
    assert set(pd.read_csv(tmp_path / "one" / "comparisons.csv")["setting"].str.split(" ").str[0]) == {"fets"}
    assert run_build(store, tmp_path / "ds", "--dataset", "iseg", "--method", "l2sp") == 0
    frame = pd.read_csv(tmp_path / "ds" / "comparisons.csv")
    assert set(frame["method"]) == {"l2sp", "scratch"} and frame["setting"].str.startswith("iseg").all()


def test_learning_curve_never_crosses_datasets(store_factory, tmp_path: Path) -> None:
    methods = {k: METHODS[k] for k in ("scratch", "finetune")}
    store = store_factory(few_shots=(1, 3), seeds=3, subjects=3, methods=methods)
    assert run_build(store, tmp_path / "o") == 0
    names = sorted(p.name for p in (tmp_path / "o").glob("learning_curve_*.png"))
    assert names == ["learning_curve_1.png", "learning_curve_2.png"]  # one per dataset
    html = (tmp_path / "o" / "index.html").read_text()
    assert "Learning curve: fets" in html and "Learning curve: iseg" in html


def test_results_folder_is_not_modified(default_store: Path, tmp_path: Path) -> None:
    def digest() -> dict:
        return {p: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(default_store.rglob("*")) if p.is_file()}

    before = digest()
    assert run_build(default_store, tmp_path / "o") == 0
    assert digest() == before


def test_a_tuned_learning_rate_is_the_methods_choice_not_a_setting(store_factory) -> None:
    store = store_factory(seeds=3, tasks={"t1-GM": TASKS["t1-GM"]})
    frame = leaderboard.load_store(store)
    tuned = frame["method"] != "scratch"
    frame.loc[tuned, "tuned_trials"] = 8
    frame["lr"] = np.where(frame["method"] == "finetune", 3e-4, 2e-3)  # each method's tuned lr
    result = leaderboard.compare(frame, "finetune")
    assert len(result) == 4 and result["setting"].str.endswith("lr=tuned").all()  # every tuned method, one setting
    assert leaderboard.compare(frame, "scratch").empty  # untuned scratch (default lr) is another setting


def test_a_tuned_method_is_named_by_its_pinned_params_only() -> None:
    rows = [  # (method, method_params, tuned_trials, trial, tuned_params)
        ("finetune", {"encoder_lr_mult": 1.0}, 0, -1, "[]"),  # untuned
        ("finetune", {"encoder_lr_mult": 0.7}, 8, -1, '["encoder_lr_mult", "lr"]'),  # study of one transfer
        ("finetune", {"encoder_lr_mult": 0.01}, 8, -1, '["encoder_lr_mult", "lr"]'),  # another transfer's choice
        ("finetune", {"encoder_lr_mult": 0.3}, 0, 2, '["encoder_lr_mult", "lr"]'),  # a trial
        ("trm", {"granularity": "pixel", "alpha": 2.0}, 8, -1, '["alpha", "lr"]'),  # pinned granularity
        ("trm", {"granularity": "location", "alpha": 3.0}, 8, -1, '["alpha", "lr"]'),
        ("l2sp", {"alpha": 0.3}, 8, -1, "[]"),  # tuned before the column existed: every param was chosen
        ("l2sp", {"alpha": 0.02}, 8, -1, "[]"),
    ]
    frame = pd.DataFrame(
        {
            "method": [r[0] for r in rows],
            "method_params": [json.dumps(r[1]) for r in rows],
            "tuned_trials": [r[2] for r in rows],
            "trial": [r[3] for r in rows],
            "tuned_params": [r[4] for r in rows],
            "cell_key": [f"k{i}" for i in range(len(rows))],
        }
    )
    expected = ["finetune"] * 4 + ["trm(granularity=pixel)", "trm(granularity=location)", "l2sp", "l2sp"]
    assert list(variant_names(frame)) == expected
    older = with_run_defaults(frame.drop(columns="tuned_params"))  # a store written before the column
    assert list(variant_names(older))[-2:] == ["l2sp", "l2sp"]


def test_cells_before_a_new_column_join_the_one_setting_they_match(tmp_path: Path) -> None:

    task = {"t1-GM": TASKS["t1-GM"]}
    make_store(tmp_path / "r", seeds=3, tasks=task)  # written before the amp column existed
    make_store(tmp_path / "r", seeds=3, tasks=task, columns={"amp": "off"}, rng_seed=1)
    frame = leaderboard.load_store(tmp_path / "r")
    assert leaderboard.compare(frame, "finetune")["setting"].nunique() == 1
    make_store(tmp_path / "r", seeds=3, tasks=task, columns={"amp": "bf16"}, rng_seed=2)
    settings = leaderboard.compare(leaderboard.load_store(tmp_path / "r"), "finetune")["setting"].unique()
    assert sorted(s.split(" · ")[-1] for s in settings) == ["amp=?", "amp=bf16", "amp=off"]  # ambiguous: apart


def test_old_store_without_setting_columns_loads_with_a_note(default_store: Path) -> None:
    frame = leaderboard.load_store(default_store)
    assert frame["lr"].isna().all()
    assert len(frame.attrs["notes"]) == 1 and "one setting" in frame.attrs["notes"][0]
