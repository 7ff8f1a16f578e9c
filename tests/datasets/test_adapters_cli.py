"""Each adapter end to end through the CLI; bad data and bad options exit 2 with the store untouched."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from layouts import make_brats, make_iseg, make_msd, snapshot, tiny_suite, truncate

from benchmarks.cli import main
from datasets.base import DATASETS

# adapter -> (writer, source task, target task)
CASES: dict[str, tuple[Callable[[Path], Path], str, str]] = {
    "brats": (lambda root: make_brats(root, "2023"), "t1-TC", "t2-TC"),
    "iseg2019": (make_iseg, "t1-CSF", "t2-CSF"),
    "msd": (make_msd, "t2-gland", "adc-PZ"),
}


@pytest.fixture(scope="module", params=list(CASES))
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One finished cell per adapter: its data root, suite, results folder and cache."""
    name = request.param
    writer, source, target = CASES[name]
    base = tmp_path_factory.mktemp(name)
    ctx = {
        "name": name,
        "root": writer(base / "data"),
        "suite": tiny_suite(base / "suite.yaml", name, source, target),
        "out": base / "out",
        "cache": base / "cache",
        "base": base,
    }
    assert main(_args(ctx, ctx["root"], ctx["out"])) == 0
    return ctx


def _args(ctx: dict, root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--suite",
        str(ctx["suite"]),
        "--data-root",
        str(root),
        "--out",
        str(out),
        "--cache-dir",
        str(ctx["cache"]),
        *extra,
    ]


@pytest.mark.slow
def test_end_to_end_cell(run: dict) -> None:
    rows = pd.concat([pd.read_parquet(p) for p in (run["out"] / "cells").glob("*.parquet")])
    assert (rows["status"] == "ok").all() and set(rows["dataset"]) == {run["name"]}
    assert rows["dice"].between(0, 1).all() and rows["hd95"].notna().all()
    assert set(rows["transfer_type"]) == {"mixed" if run["name"] == "msd" else "cross-modality"}


@pytest.mark.slow
def test_bad_subject_refused_then_skipped(run: dict, capsys: pytest.CaptureFixture) -> None:
    bad_root = run["base"] / "bad"
    shutil.copytree(run["root"], bad_root)
    adapter = DATASETS.get(run["name"])(bad_root)
    victim = adapter.labelled_subjects()[2]
    truncate(victim.label)
    before = snapshot(run["out"])
    capsys.readouterr()
    assert main(_args(run, bad_root, run["out"])) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: 1 bad subject(s)") and victim.id in err and victim.label.stem in err
    assert snapshot(run["out"]) == before
    assert main(_args(run, bad_root, run["base"] / "out-skip", "--skip-bad-subjects")) == 0
    assert f"skipped 1 bad subject(s): {victim.id}" in capsys.readouterr().err


def test_list_tasks(run: dict, capsys: pytest.CaptureFixture) -> None:
    assert main(["--list-tasks", run["name"], "--data-root", str(run["root"])]) == 0
    out = capsys.readouterr().out
    assert "groups: (none)" in out and "labelled subjects: 6 of 6" in out
    expected = {"brats": "ET=[3]", "iseg2019": "modalities: t1, t2", "msd": "gland=[1, 2]"}[run["name"]]
    assert expected in out


BAD = {
    "empty data root": (lambda tmp: ["--data-root", str(tmp / "empty")], "no BraTS subject folders"),
    "unknown option": (lambda tmp: ["--dataset-option", "lables=2023"], "unknown option(s) ['lables']"),
    "bad label scheme": (lambda tmp: ["--dataset-option", "labels=2022"], "labels=2022; valid: 2021, 2023"),
    "2021 scheme on 2023 data": (lambda tmp: ["--dataset-option", "labels=2021"], "label values [3] outside"),
    "unknown region": (lambda tmp: ["--source", "t1-TC", "--target", "t1-XX"], "unknown region 'XX'"),
    "groups on a groupless dataset": (
        lambda tmp: ["--source", "01-t1-TC", "--target", "t1-TC"],
        "not of the form MODALITY-REGION",
    ),
}


@pytest.mark.parametrize("run", ["brats"], indirect=True)
@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_store_untouched(case: str, run: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    extra, message = BAD[case]
    before = snapshot(run["out"])
    capsys.readouterr()
    args = _args(run, run["root"], run["out"])
    assert main([*args, *extra(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert snapshot(run["out"]) == before


@pytest.mark.slow
def test_mni152_suite_cell(mni152_cache: Path, tmp_path: Path) -> None:
    """The built-in mni152 suite on the generated data (default root in the cache), one short cell."""
    out = tmp_path / "out"
    args = [
        "--suite",
        "mni152",
        "--steps",
        "2",
        "--seeds",
        "0",
        "--method",
        "finetune",
        "--source",
        "t1-WM",
        "--target",
        "t1-CSF",
        "--out",
        str(out),
        "--cache-dir",
        str(mni152_cache),
    ]
    assert main(args) == 0
    rows = pd.concat([pd.read_parquet(p) for p in (out / "cells").glob("*.parquet")])
    assert (rows["status"] == "ok").all() and set(rows["dataset"]) == {"mni152"} and len(rows) == 5  # 5 test subjects
