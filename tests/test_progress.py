"""Signs of life: cell weights, elapsed/remaining text, and the heartbeat in a log that is not a terminal."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

import benchmarks.report as report_module
from benchmarks.config import Budget, Cell
from benchmarks.progress import Progress, clock, weights
from benchmarks.report import begin, reporting, tick
from benchmarks.store import Store

BUDGET = Budget(source_steps=100, target_steps=10)


def _cell(method: str, source: str, seed: int = 0) -> Cell:
    return Cell("s", "phantom", source, "01-t1-WT", method, "unet", seed, budget=BUDGET)


def test_weights_count_a_missing_source_once(tmp_path: Path) -> None:
    cells = [_cell("finetune", "01-t2-WT"), _cell("trm", "01-t2-WT"), _cell("scratch", "")]
    assert list(weights(cells, tmp_path).values()) == [110, 10, 10]


def test_clock() -> None:
    assert [clock(s) for s in (5, 75, 3700)] == ["5s", "1m15s", "1h01m"]


def test_estimate_after_the_first_cell(tmp_path: Path) -> None:
    cells = [_cell("finetune", "01-t2-WT"), _cell("scratch", "")]
    progress = Progress(cells, tmp_path, io.StringIO())
    assert progress.status().endswith("estimate after the first cell")
    progress.start -= 110.0  # the first cell (110 of 120 steps) took 110 s
    assert progress.finished(cells[0]) == "elapsed 1m50s, about 10s left"
    assert "left" not in progress.finished(cells[1])


def test_heartbeat_in_a_log_not_in_a_terminal(tmp_path: Path) -> None:
    log = io.StringIO()
    with Progress([_cell("scratch", "")], tmp_path, log, heartbeat_s=0.05):
        time.sleep(0.5)  # the heartbeat thread polls every min(heartbeat_s, 5 s)
    assert "... running: 0/1 cells finished; elapsed" in log.getvalue()

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Terminal()
    with Progress([_cell("scratch", "")], tmp_path, tty, heartbeat_s=0.05):
        time.sleep(0.3)
    assert tty.getvalue() == ""  # tqdm bars there instead


def test_calibrated_estimate_before_the_first_cell(tmp_path: Path) -> None:
    progress = Progress([_cell("scratch", "")], tmp_path, io.StringIO(), estimate_s=100.0)
    progress.start -= 40.0
    assert progress.status() == "elapsed 40s, about 1m00s left (calibrated estimate)"
    progress.start -= 100.0
    assert progress.status() == "elapsed 2m20s, longer than the calibrated estimate of 1m40s"


def test_running_cells_report_phase_and_step_and_the_time_left_falls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cell's phase and step reach the heartbeat; its training steps count, so the time left falls as it runs."""
    monkeypatch.setattr(report_module, "WRITE_S", 0.0)  # every step written (else at most every 5 s)
    store = Store(tmp_path / "out")
    store.cells.mkdir(parents=True)
    cells = [_cell("finetune", "01-t2-WT"), _cell("scratch", "")]  # weights 110 and 10 steps
    progress = Progress(cells, tmp_path, io.StringIO(), estimate_s=100.0, store=store)
    path = store.progress_path(cells[0].key)
    with reporting(path):
        assert progress.heartbeat().startswith("... running: 0/2 cells finished; finetune 01-t2-WT->01-t1-WT seed=0: ")
        begin("source training", 100)
        for _ in range(30):
            tick()
        progress.start -= 60.0
        assert progress.heartbeat().endswith("source training step 30/100; elapsed 1m00s, about 3m00s left")
        for _ in range(70):
            tick()
        begin("fine-tuning", 10)
        progress.start -= 60.0  # 100 of 120 steps in 120 s
        assert progress.heartbeat().endswith("fine-tuning step 0/10; elapsed 2m00s, about 24s left")
        begin("prediction", 2)
        tick()
        assert "prediction step 1/2" in progress.heartbeat()
    assert path.exists() and len(progress.running()) == 1  # counted until the driver has seen the cell finish
    assert progress.finished(cells[0]) == "elapsed 2m00s, about 11s left"  # 110 of 120 steps in 120 s
    assert not path.exists() and progress.running() == []


def test_reporting_outside_a_cell_is_a_no_op(tmp_path: Path) -> None:
    begin("fine-tuning", 10)
    tick()
    assert not list(tmp_path.iterdir())
