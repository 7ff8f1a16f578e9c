"""``--tune`` end to end on the phantom: trials on validation subjects, then the best on the test seeds;
suite grids (``params:``) and tuning settings (``tune:``); bad tuning input is one line, exit 2, store untouched."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import leaderboard
from benchmarks.cli import main

ONE = ["--suite", "phantom", "--source", "01-t2-WT", "--target", "01-t1-WT", "--steps", "2"]  # small and fast


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def read(out: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in (out / "cells").glob("*.parquet")], ignore_index=True)


# Every test here shares one tuning run of the CLI (about 40 s on 2 cores).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    out, cache = tmp_path_factory.mktemp("out"), tmp_path_factory.mktemp("cache")
    args = ["--method", "finetune", "l2sp", "--tune", "2", *ONE, "--out", str(out), "--cache-dir", str(cache)]
    assert main(args) == 0
    return out, cache, args


def test_trials_score_validation_subjects_then_best_runs_on_test(tuned) -> None:
    out, _, _ = tuned
    rows = read(out)
    val, test = rows[rows["split"] == "val"], rows[rows["split"] == "test"]
    assert set(val["trial"]) == {0, 1} and set(val["seed"]) == {100} and (test["trial"] == -1).all()
    assert val.groupby("method")["cell_key"].nunique().to_dict() == {"finetune": 2, "l2sp": 2}
    assert set(test["seed"]) == {0} and (test["tuned_trials"] == 2).all()
    assert set(test["tuned_params"]) == {'["encoder_lr_mult", "lr"]', '["alpha", "beta", "lr"]'}
    frame = leaderboard.load_store(out)  # a tuned method is one variant, whatever its trials tried
    assert set(frame.loc[frame["split"] == "test", "variant"]) == {"finetune", "l2sp"}
    assert not set(val["subject_id"]) & set(test["subject_id"])  # a target task's val and test never overlap
    for method, grp in test.groupby("method"):
        trials = val[val["method"] == method].groupby("cell_key").agg(dice=("dice", "mean"), lr=("lr", "first"))
        trials["params"] = val[val["method"] == method].groupby("cell_key")["method_params"].first()
        best = trials.sort_values("dice", ascending=False, kind="stable").iloc[0]
        assert grp["lr"].iloc[0] == best["lr"] and grp["method_params"].iloc[0] == best["params"]


def test_rerun_recomputes_nothing(tuned, capsys: pytest.CaptureFixture) -> None:
    out, _, args = tuned
    before = snapshot(out)
    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr()
    assert "running 0" in printed.err
    assert snapshot(out) == before
    best = next(line for line in printed.out.splitlines() if line.startswith("  best: "))
    assert "no finetune" not in best and ("vs finetune" in best or best.startswith("  best: finetune"))


def test_dry_run_counts_trial_and_test_cells(tuned, capsys: pytest.CaptureFixture) -> None:
    out, cache, args = tuned
    capsys.readouterr()
    assert main([*args[:4], "3", *args[5:], "--dry-run"]) == 0  # --tune 3: one more trial per study
    text = capsys.readouterr().out
    assert "2 stud(ies) x 3 trial(s) x 1 tuning seed(s) [100] = 6 trial cell(s)" in text
    assert "4 done, 2 to run" in text and "2 cells: 0 done" in text


def test_killed_tuning_run_resumes_without_duplicated_trials(tuned, tmp_path: Path) -> None:
    """SIGKILL the whole run after its second trial cell; the rerun finishes the study, no trial twice."""
    first, cache, _ = tuned
    out, log = tmp_path / "out", tmp_path / "run.log"
    args = ["--method", "finetune", "--tune", "3", *ONE, "--out", str(out), "--cache-dir", str(cache)]
    repo = Path(__file__).resolve().parent.parent
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.run", *args],
            cwd=repo,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.time() + 300
    while len(list(out.glob("cells/*.parquet"))) < 2:
        assert proc.poll() is None and time.time() < deadline, log.read_text()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert main(args) == 0
    rows = read(out)
    val = rows[rows["split"] == "val"].drop_duplicates("cell_key")
    assert sorted(val["trial"]) == [0, 1, 2]  # every trial once
    earlier = read(first)
    earlier = earlier[(earlier["split"] == "val") & (earlier["method"] == "finetune")].drop_duplicates("cell_key")
    assert set(earlier["cell_key"]) <= set(val["cell_key"])  # the same trials as an unbroken 2-trial study


def write_suite(folder: Path, body: str) -> str:
    path = folder / "s.yaml"
    path.write_text("dataset: phantom\ntransfers: [{source: 01-t2-WT, target: 01-t1-WT}]\nfew_shot: [3]\n" + body)
    return str(path)


def test_suite_grid_gives_one_cell_per_point(tuned, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out, cache, _ = tuned
    suite = write_suite(tmp_path, "methods: [l2sp, finetune]\nparams: {l2sp: {alpha: [0.01, 0.1], beta: 0.5}}\n")
    capsys.readouterr()
    assert main(["--suite", suite, "--steps", "2", "--out", str(out), "--cache-dir", str(cache), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert text.count(" l2sp ") == 2 and text.count(" finetune ") == 1


BAD = {
    "tune 0": ([], ["--tune", "0"], "--tune 0: must be >= 1"),
    "unknown grid parameter": ("params: {l2sp: {gamma: [1]}}\n", [], "params.l2sp.gamma: unknown parameter"),
    "empty grid": ("params: {l2sp: {alpha: []}}\n", [], "params.l2sp.alpha: empty grid"),
    "empty method grid": ("params: {l2sp: {}}\n", [], "params.l2sp: empty grid"),
    "reversed bounds": ("tune: {trials: 2, space: {lr: [0.01, 0.0001]}}\n", [], "low must be below high"),
    "tune seed is a test seed": ("tune: {trials: 2, seeds: [0]}\n", [], "also test seeds"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_tuning_input_one_line_exit_2_store_untouched(
    case: str, tuned, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out, cache, _ = tuned
    body, extra, message = BAD[case]
    suite = write_suite(tmp_path, "methods: [l2sp]\n" + body) if body else "phantom"
    before = snapshot(out)
    capsys.readouterr()
    assert main(["--suite", suite, *extra, "--steps", "2", "--out", str(out), "--cache-dir", str(cache)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert snapshot(out) == before
