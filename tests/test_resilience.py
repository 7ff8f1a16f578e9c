"""Resilience: kills at any point, concurrent writers, one training per source model, failing cells."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from benchmarks.store import COLUMNS, LOST, Store

REPO = Path(__file__).resolve().parents[1]
SUITE = """\
name: tiny
dataset: phantom
backbone: unet
seeds: [0, 1]
few_shot: [0]
methods: [{methods}]
budget: {{source_steps: {source_steps}, target_steps: 2, batch_size: 8, size: 32}}
transfers:
  - {{source: 01-t2-WT, target: 01-t1-WT}}
"""


def _setup(
    grid_phantom: tuple[Path, Path],
    new_cache: Callable[[Path], Path],
    folder: Path,
    methods: str,
    source_steps: int = 2,
) -> list[str]:
    """A suite file and a cache sharing the preprocessed subjects (``cache_with_subjects``); the CLI arguments."""
    folder.mkdir(parents=True, exist_ok=True)
    cache = new_cache(folder / "cache")
    suite = folder / "tiny.yaml"
    suite.write_text(SUITE.format(methods=methods, source_steps=source_steps))
    return [
        "--suite",
        str(suite),
        "--data-root",
        str(grid_phantom[0]),
        "--out",
        str(folder / "out"),
        "--cache-dir",
        str(cache),
    ]


def _check_store(out: Path, cells: int) -> pd.DataFrame:
    """``cells`` cells, each with its rows exactly once: all subjects x regions, or one failed row."""
    rows = Store(out).read()
    assert rows["cell_key"].nunique() == cells
    assert not rows.duplicated(["cell_key", "subject_id", "region"]).any()
    ok = rows[rows["status"] == "ok"].groupby("cell_key").size()
    assert ok.nunique() <= 1 and (rows[rows["status"] != "ok"].groupby("cell_key").size() == 1).all()
    return rows


# --- kills -------------------------------------------------------------------------------------------


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with open(log, "a") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "benchmarks.run", *args],
            cwd=REPO,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_until(cond: Callable[[], bool], proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert proc.poll() is None, f"run ended before the kill point:\n{log.read_text()}"
        assert time.time() < deadline, f"kill point not reached:\n{log.read_text()}"
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    """Pool workers of a driver (spawned processes whose parent is ``pid``)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"spawn_main" in cmdline:
            found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cells(out: Path) -> int:
    return len(list((out / "cells").glob("*.parquet"))) if (out / "cells").is_dir() else 0


@pytest.mark.slow
def test_killed_runs_resume_without_losing_or_duplicating(
    grid_phantom: tuple[Path, Path],
    cache_with_subjects: Callable[[Path], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    from benchmarks.cli import main

    args = _setup(grid_phantom, cache_with_subjects, tmp_path, "finetune, scratch", source_steps=20)
    args += ["--seeds", "0", "1", "2"]  # 6 cells: enough left after the kills of step 3 to keep the pool going
    args += ["--jobs", "1"]  # one cell at a time but in step 3: a kill point then holds for the whole job
    out, sources, log = tmp_path / "out", tmp_path / "cache" / "sources", tmp_path / "runs.log"

    # 1. The whole job killed while a source model trains: nothing is stored, no checkpoint appears.
    proc = _start(args, log)
    _wait_until(lambda: any(sources.glob("*.lock")) and not any(sources.glob("*.pt")), proc, log)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _cells(out) == 0 and not any(sources.glob("*.pt"))

    # 2. The whole job killed after its first cell.
    proc = _start(args, log)
    _wait_until(lambda: _cells(out) >= 1, proc, log)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    _check_store(out, _cells(out))

    # 3. A 2-worker pool: both workers killed once it has stored a cell. A worker busy with a cell has
    #    that cell stored as lost; one killed between storing its cell and taking the next loses nothing
    #    (both at once is rare, and then the next cell's kill catches one). The pool replaces the dead
    #    workers; then the driver alone is killed: its workers exit on their own.
    proc = _start([*args, "--jobs", "2"], log)

    def lost() -> bool:
        return bool(Store(out).read()["error"].str.startswith(LOST).any())

    while not lost():
        stored = _cells(out)
        _wait_until(lambda n=stored: _cells(out) > n and len(_children(proc.pid)) == 2, proc, log)
        for pid in _children(proc.pid):
            os.kill(pid, signal.SIGKILL)
        _wait_until(lambda n=stored: lost() or (_cells(out) > n + 1 and len(_children(proc.pid)) == 2), proc, log)
    _wait_until(lambda: len(_children(proc.pid)) == 2, proc, log)  # the replacements
    workers = _children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while any(map(_running, workers)) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(map(_running, workers)), "pool workers outlived their driver"
    rows = _check_store(out, _cells(out))
    done = rows.loc[rows["status"] == "ok", "cell_key"].nunique()
    assert rows["error"].str.startswith(LOST).any() and done < 6

    # 4. A writer's leftover is ignored, then cleaned; the rerun redoes only the lost and missing cells.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = out / "cells" / f".0123456789abcdef~{socket.gethostname()}~{int(dead.stdout)}~x.tmp"
    stale.write_bytes(b"half a parquet file")
    assert len(Store(out).read()) == len(rows)
    capsys.readouterr()
    assert main(args) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("local --jobs ") and f": {6 - done} ok, 0 failed" in summary, summary
    rows = _check_store(out, 6)
    assert (rows["status"] == "ok").all() and not stale.exists()
    assert not list((out / "cells").glob(".*.tmp"))


# --- concurrent writers ------------------------------------------------------------------------------


def _frame(key: str, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {c: 0 for c in COLUMNS}
            | {"cell_key": key, "subject_id": f"s{i}", "region": "WT", "status": "ok", "dice": len(key) / 100}
            for i in range(n)
        ]
    )


def _write_cells(root: str, worker: int, barrier: Any) -> None:
    """30 shared cells in a worker-specific order (same content), plus 10 of its own."""
    store = Store(Path(root))
    barrier.wait()
    for i in range(30):
        key = f"shared-{(i + 7 * worker) % 30:02d}"
        store.write(key, _frame(key, 1 + int(key[-2:]) % 4))
        own = f"own-{worker}-{i}"
        if i < 10:
            store.write(own, _frame(own, 2))


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_write_cells, args=(str(tmp_path), w, barrier)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    rows = Store(tmp_path).read()
    expected = sum(1 + i % 4 for i in range(30)) + 4 * 10 * 2
    assert len(rows) == expected and not rows.duplicated(["cell_key", "subject_id"]).any()
    assert rows["cell_key"].nunique() == 70
    assert not list((tmp_path / "cells").glob(".*.tmp"))


def test_stale_temporary_files(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.write("a", _frame("a", 2))
    host = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = store.cells / f".b~{host}~{int(dead.stdout)}~x.tmp"
    live = store.cells / f".c~{host}~{os.getpid()}~x.tmp"  # a writer still at work: kept
    old = store.cells / ".d~otherhost~1~x.tmp"
    for path in (leftover, live, old):
        path.write_bytes(b"half a parquet file")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert len(store.read()) == 2
    assert store.clean_stale() == 2
    assert not leftover.exists() and live.exists() and not old.exists()


# --- one training per source model -------------------------------------------------------------------


def _ask_for_source(root: Path, cache: Path, marker: Path, barrier: Any, results: Any) -> None:
    """A worker process that needs the source model of one cell; every training it does is logged."""
    import torch

    import benchmarks.sources as sources
    from benchmarks.config import Budget, Cell
    from benchmarks.data import open_dataset

    torch.set_num_threads(1)  # a forked child must not reuse the parent's OpenMP pool (as DataLoader workers)
    real_train = sources.train

    def counted(*args: Any, **kwargs: Any) -> float:
        with open(marker, "a") as fh:
            fh.write("trained\n")
        time.sleep(2.0)  # hold the lock while the other process asks for the same checkpoint
        return real_train(*args, **kwargs)

    sources.train = counted  # in this child only
    data = open_dataset("phantom", root, {}, cache, 32, 0)
    cell = Cell(
        suite="t",
        dataset="phantom",
        source_task="01-t2-WT",
        target_task="01-t1-WT",
        method="finetune",
        backbone="unet",
        seed=0,
        budget=Budget(source_steps=2, target_steps=2, size=32),
    )
    barrier.wait()  # both ask at the same moment
    model, path = sources.source_model(cell, data, cache, torch.device("cpu"))
    results.put((path.stat().st_mtime_ns, sum(float(v.double().sum()) for v in model.state_dict().values())))


def test_source_model_trained_once_across_processes(
    grid_phantom: tuple[Path, Path], cache_with_subjects: Callable[[Path], Path], tmp_path: Path
) -> None:
    root = grid_phantom[0]
    cache, marker = cache_with_subjects(tmp_path / "cache"), tmp_path / "trainings.log"
    ctx = multiprocessing.get_context("fork")  # a fresh import per process would dominate the test's time
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_ask_for_source, args=(root, cache, marker, barrier, results), daemon=True) for _ in range(2)
    ]
    for p in procs:
        p.start()
    seen = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert marker.read_text() == "trained\n"
    assert seen[0] == seen[1]  # same checkpoint, same mtime: the second process only read it
    assert not list((cache / "sources").glob(".*.tmp"))


# --- failing cells -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def failing_methods() -> Iterator[dict[str, bool]]:
    """Plugin methods ``test-nan`` (loss NaN) and ``test-oom`` (out of memory) while ``poison[name]``."""
    import torch

    from methods.base import Method, register_method
    from methods.losses import base_loss

    poison = {"test-nan": True, "test-oom": True}

    @register_method("test-nan")
    class NanLoss(Method):
        """Loss NaN while poisoned."""

        init = "random"

        def loss(self, batch: dict, logits: torch.Tensor, target_model: torch.nn.Module) -> torch.Tensor:
            return base_loss(logits, batch["label"]) * (float("nan") if poison["test-nan"] else 1.0)

    @register_method("test-oom")
    class OutOfMemory(Method):
        """Runs out of memory while poisoned."""

        init = "random"

        def loss(self, batch: dict, logits: torch.Tensor, target_model: torch.nn.Module) -> torch.Tensor:
            if poison["test-oom"]:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB")
            return base_loss(logits, batch["label"])

    yield poison


def test_failed_cells_recorded_and_retried(
    grid_phantom: tuple[Path, Path],
    cache_with_subjects: Callable[[Path], Path],
    failing_methods: dict[str, bool],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    from benchmarks.cli import main

    # Methods registered in this process only: spawned workers would not find them, so the cells run here.
    args = [*_setup(grid_phantom, cache_with_subjects, tmp_path, "test-nan, test-oom, scratch"), "--seeds", "0"]
    out = tmp_path / "out"
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines()[-1].startswith("local --jobs 1 (cpu): 1 ok, 2 failed, 0 skipped")
    rows = Store(out).read().set_index("method")
    assert rows.loc["test-nan", "status"] == "failed" and rows.loc["test-oom", "status"] == "failed"
    assert rows.loc["test-nan", "error"].startswith("TrainingDiverged: ") and "nan" in rows.loc["test-nan", "error"]
    assert rows.loc["test-oom", "error"].startswith("OutOfMemoryError: CUDA out of memory")
    assert rows.loc["scratch", "status"] == "ok"  # the grid went on after the failures
    assert "TrainingDiverged" in captured.err

    assert main([*args, "--dry-run"]) == 0
    assert capsys.readouterr().out.count("failed (kept)") == 2
    assert main([*args, "--dry-run", "--retry-failed"]) == 0
    assert capsys.readouterr().out.count("failed (rerun)") == 2

    files = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.parquet")}
    assert main(args) == 0  # failed cells count as done
    assert "0 ok, 0 failed, 3 skipped" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.parquet")} == files

    failing_methods.update({"test-nan": False, "test-oom": False})
    assert main([*args, "--retry-failed"]) == 0
    assert "2 ok, 0 failed, 1 skipped" in capsys.readouterr().out
    rows = Store(out).read()
    assert (rows["status"] == "ok").all() and rows["cell_key"].nunique() == 3
    scratch = Store(out).path(rows.loc[rows["method"] == "scratch", "cell_key"].iloc[0]).name
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.parquet")}[scratch] == files[scratch]


# --- damaged cell files ------------------------------------------------------------------------------


def _damaged_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("damaged cell file")]


def test_a_damaged_cell_file_costs_one_cell(
    grid_phantom: tuple[Path, Path],
    cache_with_subjects: Callable[[Path], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    """A truncated file and one of another schema: named in one line each, moved aside, their cells redone."""
    from benchmarks.cli import main
    from leaderboard.build import main as build

    args = [*_setup(grid_phantom, cache_with_subjects, tmp_path, "finetune, scratch"), "--jobs", "1"]
    out, site = tmp_path / "out", tmp_path / "site"
    assert main(args) == 0
    truncated, foreign = sorted((out / "cells").glob("*.parquet"))[:2]
    truncated.write_bytes(truncated.read_bytes()[:100])
    pd.DataFrame({"x": [1]}).to_parquet(foreign)  # a readable Parquet file of another table
    stray = out / "cells" / "0000000000000000.parquet"  # not a cell of this grid
    stray.write_bytes(b"PAR1 and nothing else")
    damaged = (truncated, foreign, stray)
    capsys.readouterr()

    for extra in (["--dry-run"], ["--dry-run", "--force"], ["--dry-run", "--retry-failed"]):
        assert main([*args, *extra]) == 0
        captured = capsys.readouterr()
        lines = _damaged_lines(captured.err)
        assert len(lines) == 3 and all(any(str(p) in line for line in lines) for p in damaged), captured.err
        assert all("the run will move it aside" in line for line in lines) and "Traceback" not in captured.err
        assert all(p.exists() for p in damaged)  # a dry run moves nothing
        assert ("4 to run" if "--force" in extra else "2 to run") in captured.out

    assert main([*args, "--retry-failed"]) == 0
    captured = capsys.readouterr()
    assert len(_damaged_lines(captured.err)) == 3 and "Traceback" not in captured.err, captured.err
    assert "2 ok, 0 failed, 2 skipped" in captured.out.strip().splitlines()[-1]
    aside = sorted(p.name.split(".damaged-")[0] for p in (out / "cells").glob("*.parquet.damaged-*"))
    assert aside == sorted(p.name for p in damaged) and not stray.exists()  # moved, nothing deleted
    assert (_check_store(out, 4)["status"] == "ok").all()

    # The leaderboard skips a damaged file with one line naming it and how to recompute it; --strict refuses.
    truncated.write_bytes(truncated.read_bytes()[:100])
    assert build(["--results", str(out), "--out", str(site), "--strict"]) == 2
    assert str(truncated) in capsys.readouterr().err
    assert build(["--results", str(out), "--out", str(site)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: skipped")]
    assert len(warnings) == 1 and str(truncated) in warnings[0] and "python -m benchmarks.run" in warnings[0]
    assert main([*args, "--force"]) == 0  # --force too: the file is moved aside, every cell recomputed
    assert len(_damaged_lines(capsys.readouterr().err)) == 1 and (_check_store(out, 4)["status"] == "ok").all()
