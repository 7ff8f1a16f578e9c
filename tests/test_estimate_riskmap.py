"""The estimate job and the risk-map figure on a tiny brainsim dial run: the run's models are reused (source models
by key, fine-tuned models kept by ``--save-models``), maps are scored against the ground-truth risk, the leaderboard
shows them, and bad input is one line, exit 2, nothing created."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from benchmarks.core.schema import ESTIMATES_DIR

DIAL = "*-t1ce-LC50->*-t1ce-TC"  # label conflict at 50 %: ground-truth risk exists
PLAIN = "*-t1ce-WT->*-t1ce-TC"  # no ground truth


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 4-subject brainsim (2 training subjects), two transfers, finetune and scratch for 3 steps, models kept."""
    from benchmarks.cli import main

    root = tmp_path_factory.mktemp("dial")
    suite = root / "tiny-dial.yaml"
    suite.write_text(
        textwrap.dedent(
            """\
            name: tiny-dial
            dataset: brainsim
            dataset_options: {subjects: 4, groups: 1, levels: "0,0.5,1"}
            seeds: [0]
            few_shot: [0]
            split_fractions: [0.5, 0.25, 0.25]
            methods: [finetune, scratch]
            budget: {source_steps: 3, target_steps: 3, batch_size: 8, size: 32}
            transfers:
              - {source: "*-t1ce-LC50", target: "*-t1ce-TC"}
              - {source: "*-t1ce-WT", target: "*-t1ce-TC"}
            """
        )
    )
    paths = {"suite": suite, "cache": root / "cache", "results": root / "results"}
    argv = ["--suite", str(suite), "--cache-dir", str(paths["cache"]), "--out", str(paths["results"])]
    assert main([*argv, "--save-models", "--jobs", "2"]) == 0  # pool workers save too
    return paths


def _cells(results: Path) -> pd.DataFrame:
    cells = pd.concat([pd.read_parquet(p) for p in (results / "cells").glob("*.parquet")])
    return cells.drop_duplicates("cell_key").set_index("transfer")


@pytest.mark.slow
def test_save_models_keeps_each_cells_fine_tuned_weights(run: dict[str, Path]) -> None:
    import torch

    for key in _cells(run["results"])["cell_key"]:
        state = torch.load(run["cache"] / "targets" / f"{key}.pt", weights_only=True)
        assert state["num_classes"] == 2 and all(v.device.type == "cpu" for v in state["model"].values())


def test_estimate_reuses_the_runs_source_models_and_scores_maps_where_risk_exists(run, capsys) -> None:
    from benchmarks.estimate import main
    from methods.estimators import ESTIMATORS, map_names

    sources = sorted((run["cache"] / "sources").glob("*.pt"))
    before = {p: p.stat().st_mtime_ns for p in sources}
    argv = ["--suite", str(run["suite"]), "--cache-dir", str(run["cache"]), "--out", str(run["results"])]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("source model loaded") == 2 and "trained" not in out
    assert {p: p.stat().st_mtime_ns for p in (run["cache"] / "sources").glob("*.pt")} == before  # nothing retrained
    cells = _cells(run["results"])
    for transfer in (DIAL, PLAIN):
        est = pd.read_parquet(run["results"] / ESTIMATES_DIR / f"{cells.loc[transfer, 'cell_key']}.parquet")
        scores = est[est["kind"] == "score"].set_index("estimator")["value"]
        assert set(scores.index) == set(ESTIMATORS.names()) and np.isfinite(scores).all()
        assert {p.stem for p in sources} >= set(est["source_key"])  # the run's source model, by its key
        assert est["data_fingerprint"].iloc[0] == cells.loc[transfer, "data_fingerprint"]
        assert est["suite"].iloc[0] == "tiny-dial" and est["code_version"].iloc[0]
        maps = est[est["kind"] == "map"]
        if transfer == PLAIN:
            assert maps.empty and not est["has_risk"].any()
            continue
        assert set(maps["estimator"]) == set(map_names()) and maps["subject_id"].nunique() == 2
        assert maps["auroc"].between(0, 1).all() and (maps["n_risk"] > 0).all()
        assert (maps["n_pixels"] > maps["n_risk"]).all()
    assert main(argv) == 0 and capsys.readouterr().out.count(": done") == 2  # kept unless --force
    assert main([*argv, "--estimators", "leep", "--force"]) == 0
    assert "1 estimator(s)" in capsys.readouterr().out
    est = pd.read_parquet(run["results"] / ESTIMATES_DIR / f"{cells.loc[DIAL, 'cell_key']}.parquet")
    assert set(est["estimator"]) == set(ESTIMATORS.names())  # the other estimators' rows are kept


def test_leaderboard_shows_the_map_level_and_says_why_tau_is_not_shown(run: dict[str, Path]) -> None:
    from benchmarks.estimate import main as estimate
    from leaderboard.build import main

    argv = ["--suite", str(run["suite"]), "--cache-dir", str(run["cache"]), "--out", str(run["results"])]
    assert estimate(argv) == 0
    site = run["results"].parent / "site"
    assert main(["--results", str(run["results"]), "--out", str(site)]) == 0
    maps = pd.read_csv(site / "estimators_maps.csv")
    assert set(maps["transfer"]) == {DIAL} and set(maps["estimator"]) >= {"leep", "nce"}
    assert maps["n_subjects"].eq(2).all() and maps["auroc"].between(0, 1).all()
    taus = pd.read_csv(site / "estimators_transfer.csv")
    assert taus["tau"].isna().all() and taus["note"].str.startswith("not shown: 2 transfer(s)").all()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--estimators", "leep", "nope"], "unknown estimator 'nope'"),
        (["--stride", "0"], "--stride 0: must be >= 1"),
        (["--seeds", "-1"], "--seeds -1: must be >= 0"),
        (["--source", "*-t1ce-XX", "--target", "*-t1ce-TC"], "unknown region 'XX'"),
        (["--source", "*-t1ce-WT"], "--source and --target go together"),
    ],
)
def test_estimate_bad_input_is_one_line_exit_2_nothing_created(run, tmp_path, capsys, extra, message) -> None:
    from benchmarks.estimate import main

    out = tmp_path / "results"
    assert main(["--suite", str(run["suite"]), "--cache-dir", str(run["cache"]), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not out.exists()


def test_estimate_refuses_an_out_that_is_a_file(run, tmp_path, capsys) -> None:
    from benchmarks.estimate import main

    (tmp_path / "file").write_text("x")
    assert main(["--suite", str(run["suite"]), "--out", str(tmp_path / "file")]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err


def test_riskmap_reuses_the_saved_model_and_draws_risk_leep_and_nce(run, tmp_path, capsys) -> None:
    from benchmarks.riskmap import main

    png = tmp_path / "fig.png"
    assert main(["--suite", str(run["suite"]), "--cache-dir", str(run["cache"]), "--out", str(png)]) == 0
    out = capsys.readouterr().out
    assert "source model: loaded" in out and "fine-tuned model: loaded" in out  # the run's, not trained again
    with Image.open(png) as image:
        assert image.mode == "RGBA" and round(image.info["dpi"][0]) == 300
        assert image.getpixel((0, image.height - 1))[3] == 0  # transparent where nothing is drawn
    assert png.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"


def _texts(fig) -> tuple[list[str], list[float], list[float]]:
    """Axes titles, every text's font size, and the colour bars' tick label sizes."""
    import matplotlib.text

    titles = [ax.get_title() for ax in fig.get_axes() if ax.get_title()]
    sizes = [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text().strip() and t.get_visible()]
    ticks = [
        label.get_fontsize()
        for ax in fig.get_axes()
        if not ax.get_title()  # colour-bar axes have no title
        for label in ax.get_yticklabels()
    ]
    return titles, sizes, ticks


@pytest.mark.parametrize("transfer", [DIAL, PLAIN])
def test_riskmap_panels_letters_distinct_subjects_and_fonts(run, transfer) -> None:
    import matplotlib.pyplot as plt
    import torch

    from benchmarks.data import open_suite_data
    from benchmarks.estimate import finetune_cells
    from benchmarks.riskmap import figure
    from benchmarks.suite import load_suite

    suite = load_suite(str(run["suite"]))
    data = open_suite_data(suite, None, run["cache"])
    cell = next(c for c in finetune_cells(suite, data, 1) if c.transfer == transfer)
    fig, _ = figure(cell, data, run["cache"], torch.device("cpu"), n_slices=4, stride=4)
    titles, sizes, ticks = _texts(fig)
    plt.close(fig)
    letters = [t.split("$")[1] for t in titles]
    assert letters == [f"\\mathbf{{{c}}}" for c in "abcdefg"[: len(titles)]]
    subjects = [t.split("  ")[1].split(",")[0] for t in titles if "BrainSim_" in t]
    assert len(subjects) == 2 and len(set(subjects)) == 2  # 2 training subjects: one panel each, none twice
    maps = [t for t in titles if "BrainSim_" not in t]
    if transfer == DIAL:
        assert "ground-truth risk" in maps[0] and "AUROC" in maps[1] and "LEEP" in maps[1] and "AUROC" in maps[2]
        assert "NCE" in maps[2] and "fine-tuned" in maps[3] and len(maps) == 4
    else:
        assert not any("risk" in t or "AUROC" in t for t in maps) and len(maps) == 3
    assert ticks and min(sizes) >= max(ticks)


def test_riskmap_bad_out_is_one_line_exit_2(run, tmp_path, capsys) -> None:
    from benchmarks.riskmap import main

    assert main(["--suite", str(run["suite"]), "--cache-dir", str(run["cache"]), "--out", str(tmp_path / "f.jpg")]) == 2
    err = capsys.readouterr().err
    assert "give a .png or .pdf path" in err and len(err.strip().splitlines()) == 1 and not list(tmp_path.iterdir())
