"""Every option of ``python -m benchmarks.run`` fed a bad value: one line on stderr, exit 2, nothing created.

Also: ``--help`` and an option error import no torch, and ``--dry-run`` writes nothing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
FLAGS = {
    "help",
    "force",
    "save_models",
    "retry_failed",
    "dry_run",
    "skip_bad_subjects",
    "list_methods",
    "list_datasets",
    "compile",
}

# argparse dest -> (bad arguments, a fragment of the expected message). Adding an option to the CLI means
# adding its bad value here (test_every_option_has_a_bad_value fails otherwise).
BAD: dict[str, tuple[list[str], str]] = {
    "suite": (["--suite", "nope"], "--suite 'nope': unknown suite"),
    "method": (["--method", "nope"], "unknown method 'nope'"),
    "param": (["--param", "finetune.nope=1"], "unknown hyperparameter"),
    "dataset": (["--dataset", "nope"], "unknown dataset 'nope'"),
    "data_root": (["--data-root", "/nonexistent/ntbench"], "--data-root /nonexistent/ntbench: no such folder"),
    "dataset_option": (["--dataset-option", "partitioning"], "--dataset-option 'partitioning': expected KEY=VALUE"),
    "source": (["--source", "01-pd-WT", "--target", "01-t1-WT"], "unknown modality 'pd'"),
    "target": (["--source", "01-t1-WT", "--target", "01-t1-XX"], "unknown region 'XX'"),
    "backbone": (["--backbone", "resnet999"], "unknown backbone 'resnet999'"),
    "checkpoint": (["--checkpoint", "/nonexistent/w.pt"], "--checkpoint /nonexistent/w.pt: no such file"),
    "seeds": (["--seeds", "0", "-1"], "--seeds -1: must be >= 0"),
    "source_seed": (["--source-seed", "-2"], "--source-seed -2: must be >= -1"),
    "few_shot": (["--few-shot", "-1"], "--few-shot -1: must be >= 0"),
    "split_fractions": (["--split-fractions", "0.8", "0.2", "0"], "--split-fractions 0.8 0.2 0.0: must be three"),
    "steps": (["--steps", "0"], "--steps 0: must be >= 1"),
    "tune": (["--tune", "0"], "--tune 0: must be >= 1"),
    "tune_sampler": (["--tune-sampler", "grid"], "invalid choice: 'grid'"),
    "margin": (["--margin", "0"], "argument --margin: '0': must be a number > 0"),
    "cells_per_device": (["--cells-per-device", "0"], "--cells-per-device 0: must be >= 1"),
    "threads": (["--threads", "0"], "--threads 0: must be >= 1"),
    "amp": (["--amp", "fp8"], "invalid choice: 'fp8'"),
    "out": (["--out", "{file}"], "exists and is not a folder"),
    "cache_dir": (["--cache-dir", "{file}"], "--cache-dir"),
    "device": (["--device", "gpu7"], "--device 'gpu7': expected cpu, cuda, cuda:N or auto"),
    "jobs": (["--jobs", "0"], "--jobs 0: must be >= 1"),
    "executor": (["--executor", "mpi"], "invalid choice: 'mpi'"),
    "csv": (["--csv", "/nonexistent/ntbench/all.csv"], "folder /nonexistent/ntbench does not exist"),
    "list_tasks": (["--list-tasks", "nope"], "unknown dataset 'nope'"),
    "slurm_partition": (["--slurm-partition", "gpu"], "--slurm-partition needs --executor slurm"),
    "slurm_time": (["--slurm-time", "0"], "--slurm-time 0: must be >= 1"),
    "slurm_gpus": (["--slurm-gpus", "-1"], "--slurm-gpus -1: must be >= 0"),
    "slurm_cpus": (["--slurm-cpus", "0"], "--slurm-cpus 0: must be >= 1"),
    "slurm_array_parallelism": (["--slurm-array-parallelism", "0"], "must be >= 1"),
    "slurm_extra": (
        ["--executor", "slurm", "--slurm-cluster", "local", "--slurm-extra", "qos"],
        "--slurm-extra 'qos': expected KEY=VALUE",
    ),
    "slurm_folder": (["--slurm-folder", "/tmp/x"], "--slurm-folder needs --executor slurm"),
    "slurm_cluster": (["--executor", "slurm", "--slurm-cluster", "pbs"], "invalid choice: 'pbs'"),
    "ray_address": (["--ray-address", "auto"], "--ray-address needs --executor ray"),
    "ray_cpus": (["--ray-cpus", "0"], "--ray-cpus 0: must be >= 1"),
}
NOT_A_NUMBER = [
    "seeds",
    "few_shot",
    "steps",
    "tune",
    "jobs",
    "cells_per_device",
    "threads",
    "slurm_time",
    "slurm_gpus",
    "slurm_cpus",
    "slurm_array_parallelism",
    "ray_cpus",
]


def _dests() -> set[str]:
    return {a.dest for a in build_parser()._actions if not isinstance(a, argparse._HelpAction)} | {"help"}


def test_every_option_has_a_bad_value() -> None:
    assert _dests() - FLAGS == set(BAD)


def _call(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own errors (a choice, a number that is no number)
        return int(exc.code)


@pytest.fixture
def paths(tmp_path: Path, phantom_dir: Path) -> dict[str, Path]:
    """Absent --out and --cache-dir, a plain file, and valid base arguments on the tiny phantom."""
    (tmp_path / "file").write_text("x")
    return {"out": tmp_path / "out", "cache": tmp_path / "cache", "file": tmp_path / "file", "data": phantom_dir}


def _base(paths: dict[str, Path]) -> list[str]:
    return [
        "--suite",
        "phantom",
        "--data-root",
        str(paths["data"]),
        "--out",
        str(paths["out"]),
        "--cache-dir",
        str(paths["cache"]),
        "--steps",
        "2",
        "--few-shot",
        "1",
        "--device",
        "cpu",
    ]


def _expect_one_line_exit_2(argv: list[str], fragment: str, paths: dict[str, Path], capsys: pytest.CaptureFixture):
    capsys.readouterr()
    assert _call(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and fragment in err, err
    assert not paths["out"].exists() and not paths["cache"].exists()  # nothing created


@pytest.mark.parametrize("dest", sorted(BAD))
def test_bad_value_one_line_exit_2_nothing_created(
    dest: str, paths: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    args, fragment = BAD[dest]
    args = [a.format(file=paths["file"]) for a in args]
    _expect_one_line_exit_2([*_base(paths), *args], fragment, paths, capsys)


@pytest.mark.parametrize("dest", NOT_A_NUMBER)
def test_not_a_number(dest: str, paths: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    _expect_one_line_exit_2([*_base(paths), "--" + dest.replace("_", "-"), "x"], "invalid int value", paths, capsys)


def test_few_shot_larger_than_the_training_set(paths: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    _expect_one_line_exit_2([*_base(paths), "--few-shot", "500"], "--few-shot 500 exceeds", paths, capsys)


def test_cuda_on_a_machine_without_says_what_to_use(paths: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    _expect_one_line_exit_2([*_base(paths), "--device", "cuda"], "use --device cpu or auto", paths, capsys)


def test_dry_run_writes_nothing(paths: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert _call([*_base(paths), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "calibrated just now" in out and "Nothing was written" in out
    assert not paths["out"].exists() and not paths["cache"].exists()


def test_dry_run_does_not_generate_the_embedded_data(paths: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    argv = ["--suite", "mni152", "--out", str(paths["out"]), "--cache-dir", str(paths["cache"]), "--dry-run"]
    assert _call([*argv, "--steps", "2", "--device", "cpu"]) == 0
    assert "dataset mni152 is not generated yet" in capsys.readouterr().out
    assert not paths["out"].exists() and not paths["cache"].exists()


CHECK_MODULES = (
    "import runpy, sys\n"
    "sys.argv = ['benchmarks.run', *sys.argv[1:]]\n"
    "try:\n    runpy.run_module('benchmarks.run', run_name='__main__')\n"
    "except SystemExit as exc:\n    code = exc.code\n"
    "print(code, sorted(m for m in ('torch', 'monai', 'methods', 'pandas') if m in sys.modules), file=sys.stderr)\n"
)


@pytest.mark.parametrize("argv", [["--help"], ["--seeds", "-1"], ["--jobs", "x"], ["--source", "a"]])
def test_help_and_option_errors_import_no_torch(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECK_MODULES, *argv], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.stderr.strip().splitlines()[-1] in ("0 []", "2 []"), done.stderr
