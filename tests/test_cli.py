"""End-to-end CLI on the phantom, and every bad input: one line, exit 2, store untouched."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.cli import main

STEPS = ["--steps", "2"]
PHANTOM = ["--suite", "phantom"]  # the former default suite: small and fast (the default generates brainsim)


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out, cache = tmp_path_factory.mktemp("out"), tmp_path_factory.mktemp("cache")
    assert (
        main([*PHANTOM, "--method", "finetune", "scratch", "--out", str(out), "--cache-dir", str(cache), *STEPS]) == 0
    )
    return out, cache


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_end_to_end_rows(run_dirs: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    out, _ = run_dirs
    rows = pd.concat([pd.read_parquet(p) for p in (out / "cells").glob("*.parquet")])
    assert set(rows["method"]) == {"finetune", "scratch"}
    assert (rows["status"] == "ok").all()
    assert rows["dice"].between(0, 1).all() and rows["hd95"].notna().all()
    assert rows["cell_key"].str.len().eq(16).all()
    assert {"code_version", "torch_version", "device", "wall_s"} <= set(rows.columns)


def test_rerun_skips_finished_cells(run_dirs: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    out, cache = run_dirs
    before = _snapshot(out)
    capsys.readouterr()
    assert (
        main([*PHANTOM, "--method", "finetune", "scratch", "--out", str(out), "--cache-dir", str(cache), *STEPS]) == 0
    )
    captured = capsys.readouterr()
    assert "running 0" in captured.err
    assert _snapshot(out) == before
    assert "finetune" in captured.out and "scratch" in captured.out
    assert "cannot establish a difference" in captured.out


@pytest.mark.slow
def test_force_recomputes_finished_cells(
    run_dirs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """``--force`` reruns the finished cells of its grid (a new file and ``created_at``, the same Dice); cells outside
    the grid stay as they are. Without it a rerun changes nothing (``test_rerun_skips_finished_cells``)."""
    out, cache = tmp_path / "out", run_dirs[1]
    shutil.copytree(run_dirs[0], out)
    before = {p: (p.stat().st_mtime_ns, pd.read_parquet(p)) for p in sorted((out / "cells").glob("*.parquet"))}
    capsys.readouterr()
    args = [*PHANTOM, "--method", "finetune", "--out", str(out), "--cache-dir", str(cache), *STEPS, "--force"]
    assert main(args) == 0
    forced = [p for p, (_, rows) in before.items() if rows["method"].iloc[0] == "finetune"]
    assert f"0 already done, running {len(forced)}" in capsys.readouterr().err and forced
    for path, (mtime, old) in before.items():
        new = pd.read_parquet(path)
        if path in forced:
            assert path.stat().st_mtime_ns != mtime and (new["created_at"] != old["created_at"]).all()
            assert new["dice"].tolist() == old["dice"].tolist()  # recomputed, not changed
        else:
            assert path.stat().st_mtime_ns == mtime and new.equals(old)


BAD = {
    "unknown method": (["--method", "nope"], "unknown method 'nope'"),
    "unknown backbone": (["--backbone", "resnet999"], "unknown backbone 'resnet999'"),
    "unknown dataset": (["--dataset", "nope"], "unknown dataset 'nope'"),
    "missing data root": (["--dataset", "fets2021", "--data-root", "/nonexistent/fets"], "/nonexistent/fets"),
    "missing region": (["--source", "01-t1-WT", "--target", "01-t1-XX"], "unknown region 'XX'"),
    "missing modality": (["--source", "01-pd-WT", "--target", "01-t1-WT"], "unknown modality 'pd'"),
    "bad param": (["--param", "finetune.nope=1"], "unknown hyperparameter"),
    "few-shot too large": (["--few-shot", "500"], "--few-shot 500 exceeds"),
    "unknown suite": (["--suite", "nope"], "--suite 'nope': unknown suite"),
    "oracle without risk": (["--method", "trm", "--param", "trm.score=oracle"], "needs ground-truth risk maps"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_one_line_exit_2_store_intact(
    case: str, run_dirs: tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    out, cache = run_dirs
    before = _snapshot(out)
    capsys.readouterr()
    args, message = BAD[case]
    assert main([*PHANTOM, *args, "--out", str(out), "--cache-dir", str(cache), *STEPS]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert message in err
    assert _snapshot(out) == before


def test_data_root_not_in_layout(tmp_path: Path, run_dirs: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    out, cache = run_dirs
    (tmp_path / "random.txt").write_text("not a dataset")
    before = _snapshot(out)
    assert (
        main(
            [
                "--dataset",
                "fets2021",
                "--data-root",
                str(tmp_path),
                "--out",
                str(out),
                "--cache-dir",
                str(cache),
                *STEPS,
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path) in err
    assert _snapshot(out) == before


def test_unwritable_out(tmp_path: Path, run_dirs: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    _, cache = run_dirs
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main([*PHANTOM, "--out", str(blocker / "results"), "--cache-dir", str(cache), *STEPS]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out" in err


def test_list_methods(capsys: pytest.CaptureFixture) -> None:
    assert main(["--list-methods"]) == 0
    text = capsys.readouterr().out
    assert "finetune" in text and "scratch" in text and "encoder_lr_mult" in text


@pytest.mark.slow
def test_checkpoint_initialises_and_enters_the_key(
    tmp_path: Path, run_dirs: tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    import torch

    from benchmarks.backbones import build_backbone

    _, cache = run_dirs
    good, bad = tmp_path / "unet.pt", tmp_path / "basic.pt"
    torch.save({"model": build_backbone("unet", 1, 5).state_dict()}, good)  # other head: left fresh
    torch.save(build_backbone("basicunet", 1, 2).state_dict(), bad)
    out = tmp_path / "out"
    common = [*PHANTOM, "--method", "scratch", "--out", str(out), "--cache-dir", str(cache), *STEPS]
    assert main(common) == 0
    assert main([*common, "--checkpoint", str(good)]) == 0
    assert len(list((out / "cells").glob("*.parquet"))) == 4  # same grid, new keys: nothing reused
    before = _snapshot(out)
    capsys.readouterr()
    assert main([*common, "--checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not fit backbone 'unet'" in err
    assert _snapshot(out) == before


@pytest.mark.slow
def test_summary_answers_the_question(run_dirs: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    """Best method and margins per transfer, n and * explained, where results are, a leaderboard command that works."""
    import shlex

    from leaderboard.build import main as leaderboard_main

    out, cache = run_dirs
    capsys.readouterr()
    common = [
        *PHANTOM,
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
        *STEPS,
        "--source",
        "01-t2-WT",
        "--target",
        "01-t1-WT",
    ]
    assert main([*common, "--method", "trm", "finetune", "scratch", "--param", "trm.alpha=2"]) == 0
    assert main([*common, "--method", "trm", "finetune", "scratch"]) == 0
    text = capsys.readouterr().out
    block = text[text.index("01-t2-WT -> 01-t1-WT") :]
    assert "cross-modality" in block.splitlines()[0]
    assert "trm(alpha=2)" in block and "trm(defaults)" in block  # the leaderboard's variant names
    best = next(line for line in block.splitlines() if line.strip().startswith("best:"))
    winner = best.split()[1]
    assert all(f" vs {control}" in best for control in ("finetune", "scratch") if control != winner), best
    assert "n = rows = test subjects x regions x seeds" in text
    assert "A * in a task name" not in text  # no pooled task in the last run
    assert f"cells in {out.resolve()}/cells" in text
    command = shlex.split(text.split("Next, tables with paired tests and figures: ")[1].splitlines()[0])
    assert command[1:3] == ["-m", "leaderboard.build"] and "--include-smoke" in command  # command[0]: this python
    assert leaderboard_main(command[3:]) == 0  # works as printed
    assert (out / "site" / "index.html").is_file()


def test_summary_explains_the_star(run_dirs: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    out, cache = run_dirs
    capsys.readouterr()
    assert (
        main([*PHANTOM, "--method", "finetune", "scratch", "--out", str(out), "--cache-dir", str(cache), *STEPS]) == 0
    )
    text = capsys.readouterr().out
    assert text.count("A * in a task name means every group") == 1
