"""Bad input gives one line and exit status 2; awkward stores give clear output, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import METHODS, TASKS, run_build

ROOT = Path(__file__).resolve().parents[2]
FAST: tuple[str, ...] = ()


def test_command_line_error_is_one_line_and_imports_stay_light(tmp_path: Path) -> None:
    # One fresh interpreter: the real entry point on a missing folder, then which packages it loaded.
    code = (
        "import sys; from leaderboard.build import main; "
        f"status = main(['--results', {str(tmp_path / 'nope')!r}, '--out', {str(tmp_path / 'o')!r}]); "
        "heavy = ('torch', 'benchmarks.cli', 'benchmarks.cell', 'methods'); "  # datasets.core is the bottom layer
        "heavy = [m for m in sorted(sys.modules) if m in heavy or (m.startswith('datasets.') "
        "and not m.startswith('datasets.core'))]; "
        "print(status, heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "2 []", result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--results" in lines[0] and "nope" in lines[0], lines


def build_error(capsys, results: Path, out: Path, *extra: str) -> str:
    """Run the command in-process, expect exit status 2 and return its single stderr line."""
    try:
        status = run_build(results, out, *extra)
    except SystemExit as exc:  # argparse rejects --metric/--alpha values itself
        status = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1, err
    return err[0]


def test_empty_folder_says_what_to_run_and_creates_nothing(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    message = build_error(capsys, tmp_path / "empty", tmp_path / "o")
    assert "no *.parquet" in message and "run `python -m benchmarks.run` first" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no --out folder, no staging folder


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (("--control", "foo"), "--control foo: unknown method"),
        (("--metric", "iou"), "--metric"),
        (("--region", "WT"), "--region WT"),
        (("--scratch", "nothing"), "--scratch nothing"),
        (("--control", "trm"), "ambiguous"),
        (("--few-shot", "3"), "--few-shot 3"),
        (("--alpha", "1.5"), "--alpha"),
        (("--suite", "nope"), "--suite nope"),
        (("--dataset", "nope"), "--dataset nope"),
        (("--method", "nope"), "--method nope"),
        (("--power-delta", "-1"), "--power-delta"),
    ],
)
def test_bad_options(default_store: Path, tmp_path: Path, capsys, extra, fragment) -> None:
    assert fragment in build_error(capsys, default_store, tmp_path / "o", *extra)
    assert not (tmp_path / "o").exists()


def test_mixed_units_and_power_command(store_factory, tmp_path: Path, capsys) -> None:
    from leaderboard.power import main as power_main

    store = store_factory(seeds=3)
    assert power_main(["--results", str(store), "--control", "finetune", "--delta", "0.02"]) == 0
    out = capsys.readouterr().out
    assert "seeds needed for 80% power" in out and "trm(alpha=2) vs finetune: pilot 3 seeds x 6 subjects" in out
    path = sorted((store / "cells").glob("*.parquet"))[0]
    frame = pd.read_parquet(path)
    frame.assign(dice=frame["dice"] * 100).to_parquet(path, index=False)  # a percentage among fractions
    assert "mixed units" in build_error(capsys, store, tmp_path / "o")
    assert power_main(["--results", str(store), "--delta", "0.02"]) == 2
    assert "mixed units" in capsys.readouterr().err


def test_bad_parquet_and_missing_columns(tmp_path: Path, capsys) -> None:
    results = tmp_path / "r"
    (results / "cells").mkdir(parents=True)
    (results / "cells" / "x.parquet").write_text("not parquet")
    assert "x.parquet" in build_error(capsys, results, tmp_path / "o")
    pd.DataFrame({"cell_key": ["a"]}).to_parquet(results / "cells" / "x.parquet")
    assert "missing column" in build_error(capsys, results, tmp_path / "o")


def test_unwritable_out(default_store: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "file").write_text("")
    assert "--out" in build_error(capsys, default_store, tmp_path / "file", *FAST)


def test_all_cells_failed(store_factory, tmp_path: Path, capsys) -> None:
    failed = tuple((v, t, s) for v in METHODS for t in TASKS for s in range(3))
    store = store_factory(seeds=3, failed=failed)
    assert run_build(store, tmp_path / "o", *FAST) == 2
    assert "no successful result" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o-*"))  # a failed build leaves nothing


def test_failed_and_missing_cells_are_shown(store_factory, tmp_path: Path, capsys) -> None:
    store = store_factory(failed=(("bss", "02-t1-TC", 1),), missing=(("l2sp", "t1-GM", 4),))
    assert run_build(store, tmp_path / "o", *FAST) == 0
    assert "1 failed, 1 missing" in capsys.readouterr().out
    markdown = (tmp_path / "o" / "leaderboard.md").read_text()
    assert "## Failed cells (1)" in markdown and "CUDA out of memory" in markdown
    assert "## Missing cells (1)" in markdown and "| l2sp | t2-GM → t1-GM | 4 |" in markdown
    comparisons = pd.read_csv(tmp_path / "o" / "comparisons.csv", keep_default_na=False).set_index("method")
    # Each pair keeps the seeds both of its methods have: bss lost seed 1 on fets, l2sp seed 4 on iseg.
    fets = comparisons[comparisons["setting"].str.startswith("fets")]
    iseg = comparisons[comparisons["setting"].str.startswith("iseg")]
    assert fets.loc["bss", "n_seeds"] == 4 and fets.loc["l2sp", "n_seeds"] == 5
    assert iseg.loc["l2sp", "n_seeds"] == 4 and iseg.loc["bss", "n_seeds"] == 5
    html = (tmp_path / "o" / "index.html").read_text()
    assert "CUDA out of memory" in html and "1 failed and 1 missing" in html


def test_single_method(store_factory, tmp_path: Path, capsys) -> None:
    store = store_factory(methods={"finetune": METHODS["finetune"]})
    assert run_build(store, tmp_path / "o", *FAST) == 0
    out = capsys.readouterr().out
    assert "only one method (finetune): nothing to compare" in out
    assert pd.read_csv(tmp_path / "o" / "comparisons.csv").empty
    omnibus = json.loads((tmp_path / "o" / "omnibus.json").read_text())
    assert all(o["k"] == 1 and "3 or more methods" in o["note"] for o in omnibus["settings"].values())
    assert not list((tmp_path / "o").glob("cd_diagram*.png"))
    assert (tmp_path / "o" / "index.html").exists()


def test_default_control_absent_is_reported_not_fatal(store_factory, tmp_path: Path, capsys) -> None:
    store = store_factory(methods={k: METHODS[k] for k in ("scratch", "l2sp", "bss")}, seeds=3, subjects=4)
    assert run_build(store, tmp_path / "o", *FAST) == 0
    assert "no comparisons: no result of control 'finetune' here" in capsys.readouterr().out
    assert not pd.read_csv(tmp_path / "o" / "negative_transfer.csv").empty
    assert run_build(store, tmp_path / "o2", "--control", "l2sp", *FAST) == 0
    assert len(pd.read_csv(tmp_path / "o2" / "comparisons.csv")) == 4  # 2 methods x 2 settings (one task each)


def test_few_units_no_cd_diagram_and_mixed_code_versions(store_factory, tmp_path: Path) -> None:
    tasks = {"t1-GM": TASKS["t1-GM"]}
    store = store_factory(tasks=tasks, subjects=4, code_versions=("3f2a9c1", "77e0b2d"))
    assert run_build(store, tmp_path / "o") == 0
    omnibus = json.loads((tmp_path / "o" / "omnibus.json").read_text())
    (only,) = omnibus["settings"].values()
    assert not only["draw_cd"] and ("fewer than 5" in only["note"] or "does not reject" in only["note"])
    assert not list((tmp_path / "o").glob("cd_diagram*.png"))
    html = (tmp_path / "o" / "index.html").read_text()
    assert "no CD diagram" in html and "mix code versions" in html
    assert "mixes code versions (3f2a9c1, 77e0b2d)" in (tmp_path / "o" / "leaderboard.md").read_text()


def test_few_shot_filter_and_region_filter(store_factory, tmp_path: Path) -> None:
    methods = {k: METHODS[k] for k in ("scratch", "finetune", "trm(alpha=2)")}
    store = store_factory(few_shots=(1, 3, 0), seeds=3, subjects=3, methods=methods, scores=False)
    assert run_build(store, tmp_path / "o1", "--few-shot", "1") == 0
    assert pd.read_csv(tmp_path / "o1" / "comparisons.csv")["setting"].str.contains("K=1").all()
    assert run_build(store, tmp_path / "o", "--region", "GM") == 0
    assert pd.read_csv(tmp_path / "o" / "comparisons.csv")["setting"].str.startswith("iseg").all()
    assert not (tmp_path / "o" / "transferability.csv").exists()


def test_transferability_outputs(default_build: Path) -> None:
    table = pd.read_csv(default_build / "transferability.csv")
    assert len(table) == 2 and {"leep", "nce", "gain", "leep_minus_nce"} <= set(table.columns)
    taus = json.loads((default_build / "omnibus.json").read_text())["transferability_kendall"]
    assert {t["score"] for t in taus} == {"leep", "nce"} and all("not shown" in t["note"] for t in taus)
    assert "coincide exactly when the source model" in (default_build / "leaderboard.md").read_text()


def test_method_with_only_failed_cells_is_named(store_factory, tmp_path: Path, capsys) -> None:
    store = store_factory(seeds=3, failed=tuple(("bss", t, s) for t in TASKS for s in range(3)))
    assert run_build(store, tmp_path / "o", *FAST) == 0
    assert "no successful result (left out): bss" in capsys.readouterr().out
    markdown = (tmp_path / "o" / "leaderboard.md").read_text()
    assert "no successful result here: bss" in markdown and "## Failed cells (6)" in markdown


def test_latex_table(default_build: Path) -> None:
    tex = (default_build / "leaderboard.tex").read_text()
    for needle in (
        r"\toprule",
        r"\midrule",
        r"\bottomrule",
        r"\label{tab:ntbench-leaderboard-2}",
        r"$\pm$",
    ):
        assert needle in tex, needle
    assert "±" not in tex and "†" not in tex and "_" not in tex.replace(r"\_", "")
