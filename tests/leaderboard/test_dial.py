"""The dial's dose-response section: levels parsed from brainsim's task names, rows equal to the page's."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import make_store, run_build

from leaderboard.dial import dial_level


@pytest.mark.parametrize(
    ("transfer", "expected"),
    [
        ("*-t1ce-LC25->*-t1ce-TC", ("label conflict", 0.25)),
        ("01-t1ce-LC100->01-t1ce-TC", ("label conflict", 1.0)),
        ("*-flair-WT->*-cc0-WT", ("contrast conflict", 0.0)),
        ("*-flair-WT->*-cc75-WT", ("contrast conflict", 0.75)),
        ("*-t1ce-ED->*-t1ce-TC", None),
        ("t1-WM->t1-CSF", None),
        ("scratch->*-cc50-WT", ("contrast conflict", 0.5)),
    ],
)
def test_dial_level_from_the_task_names(transfer: str, expected: tuple | None) -> None:
    assert dial_level(transfer) == expected


def test_dial_rows_are_the_negative_transfer_rows(tmp_path: Path) -> None:
    sources = ["*-t1ce-LC0", "*-t1ce-LC50", "*-t1ce-LC100"]
    shifts = {"*-t1ce-TC": 0.0} | {f"{s}->*-t1ce-TC": g for s, g in zip(sources, (0.3, 0.1, -0.1))}
    methods = {"scratch": ("scratch", {}, {"*-t1ce-TC": 0.0}), "finetune": ("finetune", {}, shifts)}
    tasks = {"*-t1ce-TC": ("brainsim", sources, "cross-task", "TC", 0.3, "BrainSim_")}
    store = make_store(tmp_path / "results", methods=methods, tasks=tasks, seeds=3, subjects=8, scores=False)
    assert run_build(store, tmp_path / "site") == 0
    dial = pd.read_csv(tmp_path / "site" / "dial.csv")
    assert list(dial["level"]) == [0.0, 0.5, 1.0] and set(dial["mechanism"]) == {"label conflict"}
    assert dial["mean_diff"].is_monotonic_decreasing
    nt = pd.read_csv(tmp_path / "site" / "negative_transfer.csv")
    per_transfer = nt[nt["level"] == "transfer"].set_index("scope")
    for row in dial.itertuples():
        same = per_transfer.loc[row.transfer]
        assert (row.mean_diff, row.ci_low, row.ci_high, row.verdict) == (
            same["mean_diff"],
            same["ci_low"],
            same["ci_high"],
            same["verdict"],
        )
    assert (tmp_path / "site" / "dial_1.png").is_file()
    assert 'id="dial-1-title"' in (tmp_path / "site" / "index.html").read_text()


def test_no_dial_section_without_dial_transfers(default_build: Path) -> None:
    assert (
        not (default_build / "dial.csv").exists() and "dial-1-title" not in (default_build / "index.html").read_text()
    )
