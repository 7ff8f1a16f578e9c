"""Executors: one small grid through local processes, submitit (local cluster) and Ray gives the same rows."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import submitit
import torch

from benchmarks.cli import build_parser, cell_threads, main, make_executor, slurm_parameters
from benchmarks.executors import RayTasks, waves
from benchmarks.grid import grid_cells
from benchmarks.sources import source_key
from benchmarks.suite import Suite
from benchmarks.threads import WAIT_VARIABLES, wait_policy

PROVENANCE = ["code_version", "torch_version", "device", "wall_s", "created_at"]
SUITE = """\
name: tiny
dataset: phantom
backbone: unet
seeds: [0, 1]
few_shot: [0]
methods: [finetune, scratch]
budget: {source_steps: 2, target_steps: 2, batch_size: 8, size: 32}
transfers:
  - {source: 01-t2-WT, target: 01-t1-WT}
"""
THREADS = 1  # torch threads per cell (the default): CPU results are bitwise equal only at equal thread counts


@pytest.fixture(scope="module")
def grid(grid_suite: Callable) -> tuple[Path, Path, Callable]:
    """(suite file, phantom root, ``cache_with_subjects``)."""
    return grid_suite(SUITE)


def _args(grid: tuple[Path, Path, Callable], out: Path) -> list[str]:
    """CLI arguments for a run into ``out`` with its own cache (own source models), sharing the subjects."""
    suite, root, new_cache = grid
    cache = new_cache(out.parent / f"{out.name}-cache")
    return [
        "--suite",
        str(suite),
        "--data-root",
        str(root),
        "--steps",
        "2",
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
    ]


def _rows(out: Path) -> pd.DataFrame:
    rows = pd.concat([pd.read_parquet(p) for p in sorted((out / "cells").glob("*.parquet"))])
    return rows.drop(columns=PROVENANCE).sort_values(["cell_key", "subject_id", "region"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def ray_cluster() -> None:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _no_wait_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The user set no OpenMP wait variable (``import benchmarks`` set one in this process: undone at teardown)."""
    for name in WAIT_VARIABLES:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


@pytest.mark.slow
def test_executors_write_identical_rows(
    grid: tuple[Path, Path, Path],
    tmp_path: Path,
    ray_cluster: None,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _no_wait_variables(monkeypatch)  # each executor's workers must set the sleeping policy themselves
    runs = {
        "local": ["--executor", "local", "--jobs", "2"],
        "slurm": ["--executor", "slurm", "--slurm-cluster", "local", "--slurm-cpus", str(THREADS)],
        "ray": ["--executor", "ray", "--ray-cpus", str(THREADS)],
    }
    rows = {}
    for name, options in runs.items():
        assert main([*_args(grid, tmp_path / name), *options]) == 0
        summary = capsys.readouterr().out.strip().splitlines()[-1]
        assert summary.startswith(name) and "4 ok, 0 failed, 0 skipped" in summary, summary
        rows[name] = _rows(tmp_path / name)
    reference = rows["local"]
    assert reference["cell_key"].nunique() == 4 and (reference["status"] == "ok").all()
    assert set(reference["method"]) == {"finetune", "scratch"} and set(reference["seed"]) == {0, 1}
    for name in ("slurm", "ray"):
        pd.testing.assert_frame_equal(rows[name], reference, obj=name)
    assert (reference["omp_wait"] == "OMP_WAIT_POLICY=PASSIVE").all()  # in the workers of all three executors
    assert any((tmp_path / "slurm" / "slurm").glob("*_log.out"))  # submitit logs next to the results
    assert not list((tmp_path / "local" / "cells").glob(".*.running"))  # progress reports end with their cell

    # --dry-run lists the cells and the work left, and writes nothing.
    assert main([*_args(grid, tmp_path / "empty"), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "4 to run" in plan and "2 source model(s)" in plan and "calibrated just now" in plan
    assert not (tmp_path / "empty").exists()
    assert (
        main(
            [
                "--suite",
                str(grid[0]),
                "--data-root",
                str(grid[1]),
                "--steps",
                "2",
                "--out",
                str(tmp_path / "local"),
                "--cache-dir",
                str(tmp_path / "local-cache"),
                "--dry-run",
            ]
        )
        == 0
    )
    plan = capsys.readouterr().out
    assert plan.count("ok (kept)") == 4 and "0 to run" in plan and "work left: none" in plan


BAD = {
    "jobs": (["--jobs", "0"], "--jobs 0: must be >= 1"),
    "slurm option without slurm": (["--slurm-partition", "gpu"], "--slurm-partition needs --executor slurm"),
    "ray option without ray": (["--ray-address", "auto"], "--ray-address needs --executor ray"),
    "slurm extra": (
        ["--executor", "slurm", "--slurm-cluster", "local", "--slurm-extra", "account"],
        "--slurm-extra 'account': expected KEY=VALUE",
    ),
    "slurm time": (["--executor", "slurm", "--slurm-cluster", "local", "--slurm-time", "0"], "--slurm-time 0"),
    "slurm cuda without gpus": (
        ["--executor", "slurm", "--slurm-cluster", "local", "--device", "cuda"],
        "--device cuda needs --slurm-gpus",
    ),
    "ray device index": (["--executor", "ray", "--device", "cuda:1"], "--device cuda:1"),
}
if shutil.which("srun") is None:
    BAD["no slurm here"] = (["--executor", "slurm"], "--executor slurm: no SLURM on this machine")
if not torch.cuda.is_available():
    BAD["local cuda"] = (["--device", "cuda"], "--device cuda: CUDA is not available")


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_executor_option_one_line_exit_2(
    case: str, grid: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    options, message = BAD[case]
    out = tmp_path / "out"
    assert main([*_args(grid, out), *options]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    ("options", "cpus", "threads"),
    [([], 1, 1), (["--ray-cpus", "4"], 4, 4), (["--ray-cpus", "4", "--threads", "2"], 4, 2)],
)
def test_ray_tasks_reserve_ray_cpus_and_run_threads(
    options: list[str], cpus: int, threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    args = build_parser().parse_args(["--executor", "ray", *options])
    assert (make_executor(args).cpus, cell_threads(args)) == (cpus, threads)


@pytest.mark.slow
def test_workers_keep_the_users_wait_policy(
    grid: tuple[Path, Path, Path], tmp_path: Path, ray_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wait variable the user set reaches the workers as it is, and no sleeping policy is added."""
    import ray

    _no_wait_variables(monkeypatch)
    monkeypatch.setenv("GOMP_SPINCOUNT", "1000")
    for name, options in (("local", ["--jobs", "2"]), ("slurm", ["--executor", "slurm", "--slurm-cluster", "local"])):
        assert main([*_args(grid, tmp_path / name), *options]) == 0
        assert (_rows(tmp_path / name)["omp_wait"] == "GOMP_SPINCOUNT=1000").all(), name
    seen = ray.get(RayTasks(None, 2, 1, "cpu").remote(wait_policy).remote())  # in a Ray worker
    assert "GOMP_SPINCOUNT=1000" in seen  # Ray's workers get the driver's variables (runtime_env)


def test_slurm_options_become_sbatch_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = build_parser().parse_args(
        [
            "--executor",
            "slurm",
            "--slurm-partition",
            "gpu",
            "--slurm-time",
            "90",
            "--slurm-gpus",
            "1",
            "--slurm-cpus",
            "8",
            "--slurm-array-parallelism",
            "16",
            "--slurm-extra",
            "account=abc",
            "--slurm-extra",
            "qos=high",
        ]
    )
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # pretend srun exists
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="slurm")
    executor.update_parameters(**slurm_parameters(args))
    sbatch = executor._executor._make_submission_file_text("python -m x", "uid")
    for flag in (
        "--partition=gpu",
        "--time=90",
        "--gpus-per-node=1",
        "--cpus-per-task=8",
        "--account=abc",
        "--qos=high",
        "--job-name=ntbench",
    ):
        assert f"#SBATCH {flag}\n" in sbatch, flag
    assert executor._executor.parameters["array_parallelism"] == 16


def test_waves_train_each_source_model_once_up_front(tmp_path: Path) -> None:
    transfers = [("01-t1-TC", "01-t2-TC"), ("01-t1-TC", "01-flair-TC"), ("01-t1-WT", "01-t1-ET")]
    suite = Suite(
        name="t", dataset="phantom", transfers=transfers, methods=["finetune", "scratch", "l2sp"], seeds=[0, 1]
    )
    cells = grid_cells(suite, {m: {} for m in suite.methods})
    first, second = waves(cells, tmp_path)
    keys = [source_key(c) for c in first if c.source_task]
    assert len(keys) == len(set(keys)) == 4  # 2 source tasks x 2 seeds, each trained by one cell
    assert sum(not c.source_task for c in first) == 6  # scratch needs no source: 3 targets x 2 seeds
    assert len(first) + len(second) == len(cells) == 18
    assert {source_key(c) for c in second} <= set(keys)
    (tmp_path / "sources").mkdir()
    for key in keys:
        (tmp_path / "sources" / f"{key}.pt").touch()
    assert waves(cells, tmp_path) == [cells]  # every source model exists: one wave


def test_a_worker_dead_while_idle_leaves_its_next_cell_pending(tmp_path: Path) -> None:
    """Giving a cell to a worker that died between two cells must not crash the driver nor lose the cell."""
    from collections import deque

    from benchmarks.executors import Job, _Worker

    worker = _Worker("cpu", Job(tmp_path / "spec.json", tmp_path / "out", tmp_path / "cache"))
    worker.proc.kill()
    worker.proc.join()
    pending = deque(["cell-a", "cell-b"])
    assert worker.give(pending) is False
    assert list(pending) == ["cell-a", "cell-b"] and worker.cell is None
    worker.stop()
