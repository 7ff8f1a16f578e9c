"""One cell factory and one resolution (issue 23, item 2): the runner, ``import_predictions`` and ``riskmap`` make
the same cells (bugs A and B), and a run opens the dataset, splits it and builds its grid once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

SUITE = """\
name: factory
dataset: phantom
backbone: unet
seeds: [0]
methods: [finetune, scratch]
budget: {source_steps: 3, target_steps: 3, batch_size: 8, size: 32}
transfers:
  - {source: 01-t2-WT, target: 01-t1-WT}
"""
STEPS = "2"


@pytest.fixture(scope="module")
def run(grid_suite: Callable, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One smoke run (``--steps 2``) of one transfer, finetune and scratch, counting what it opens and builds."""
    import benchmarks.data
    import benchmarks.grid
    import benchmarks.plan
    from benchmarks.cli import main
    from datasets.base import DATASETS

    suite, root, new_cache = grid_suite(SUITE)
    base = tmp_path_factory.mktemp("factory")
    out, cache = base / "out", new_cache(base / "cache")
    counts: Counter = Counter()

    def counting(name: str, function: Callable) -> Callable:
        def call(*args, **kwargs):
            counts[name] += 1
            return function(*args, **kwargs)

        return call

    adapter = DATASETS.get("phantom")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(adapter, "__init__", counting("adapter", adapter.__init__))
        for module in (benchmarks.data, benchmarks.plan):
            patch.setattr(module, "stratified_split", counting("split", module.stratified_split))
        patch.setattr(benchmarks.grid, "grid_cells", counting("grid", benchmarks.grid.grid_cells))
        args = ["--suite", str(suite), "--data-root", str(root), "--out", str(out), "--cache-dir", str(cache)]
        assert main([*args, "--device", "cpu", "--jobs", "1", "--steps", STEPS]) == 0
    rows = pd.concat(pd.read_parquet(p) for p in (out / "cells").glob("*.parquet"))
    return {"suite": suite, "root": root, "out": out, "cache": cache, "counts": counts, "rows": rows}


def test_a_run_opens_splits_and_builds_its_grid_once(run: dict) -> None:
    assert run["counts"] == {"adapter": 1, "split": 1, "grid": 1}
    assert set(run["rows"]["method"]) == {"finetune", "scratch"} and set(run["rows"]["status"]) == {"ok"}


def test_import_predictions_steps_joins_the_runs_smoke_cells(run: dict, tmp_path: Path) -> None:
    """Bug A: ``import_predictions --steps N`` wrote smoke=False (the runner True), so its rows formed another
    setting than the smoke cells its help says they are for."""
    import nibabel as nib
    import numpy as np

    from benchmarks.data import open_suite_data
    from benchmarks.interop.import_predictions import main
    from benchmarks.suite import load_suite
    from datasets import io as dio
    from leaderboard.settings import setting_text
    from leaderboard.store import load_store

    data = open_suite_data(load_suite(str(run["suite"])), run["root"], run["cache"])
    task = data.task("01-t1-WT")
    subjects = {s.id: s for s in data.adapter.task_subjects(task)}
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    for sid in data.task_ids(task, "test"):
        image = nib.load(str(dio.split_channel(subjects[sid].images[task.modality])[0]))
        empty = nib.Nifti1Image(np.zeros(image.shape[:3], np.uint8), image.affine)
        nib.save(empty, str(predictions / f"{sid}.nii.gz"))
    args = ["--predictions", str(predictions), "--task", "01-t1-WT", "--suite", str(run["suite"]), "--steps", STEPS]
    args += ["--data-root", str(run["root"]), "--out", str(run["out"]), "--cache-dir", str(run["cache"])]
    assert main(args) == 0
    df = load_store(run["out"])
    imported, scratch = df[df["method"] == "nnunet"], df[df["method"] == "scratch"]
    assert imported["smoke"].all()
    text = setting_text(df)
    settings = [text.loc[rows.index].drop_duplicates().to_dict("records") for rows in (imported, scratch)]
    assert settings[0] == settings[1] and len(settings[0]) == 1


def test_riskmap_steps_uses_the_runs_cell_and_source_model(run: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug B: ``riskmap --steps 2`` made another cell key and source key than the runner's, so it trained again."""
    import benchmarks.riskmap
    from benchmarks.sources import source_key

    class Drawn(Exception):
        """Stops riskmap where it would draw: the cell it chose is all this test needs."""

    chosen = []

    def figure(cell, *args, **kwargs):
        chosen.append(cell)
        raise Drawn

    monkeypatch.setattr(benchmarks.riskmap, "figure", figure)
    args = ["--suite", str(run["suite"]), "--source", "01-t2-WT", "--target", "01-t1-WT", "--seed", "0"]
    args += ["--steps", STEPS, "--data-root", str(run["root"]), "--cache-dir", str(run["cache"]), "--device", "cpu"]
    with pytest.raises(Drawn):
        benchmarks.riskmap.main(args)
    (cell,) = chosen
    finetune = set(run["rows"].loc[run["rows"]["method"] == "finetune", "cell_key"])
    assert finetune == {cell.key}  # the run's finetune cell, so its saved model and store rows
    trained = {path.stem for path in (run["cache"] / "sources").glob("*.pt")}
    assert trained == {source_key(cell)}  # the run's source model: loaded, not trained again


def test_a_checkpoint_is_read_once_per_grid(grid_phantom: tuple, tmp_path: Path, monkeypatch) -> None:
    """The grid's data fingerprint hashes the --checkpoint file once, not once per cell."""
    import torch

    from benchmarks.backbones import build_backbone
    from benchmarks.grid import build_cells
    from benchmarks.plan import peek_dataset
    from benchmarks.suite import load_suite

    checkpoint = tmp_path / "init.pt"
    torch.save(build_backbone("unet", 1, 2, size=32).state_dict(), checkpoint)
    suite_file = tmp_path / "s.yaml"
    suite_file.write_text(SUITE.replace("seeds: [0]", "seeds: [0, 1, 2]"))
    suite = load_suite(str(suite_file))
    data = peek_dataset("phantom", grid_phantom[0], {}, grid_phantom[1].parent, 32, 0)
    reads = Counter()
    read_bytes = Path.read_bytes

    def counted(path: Path) -> bytes:
        reads[Path(path).resolve()] += 1
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", counted)
    cells = build_cells(suite, {"finetune": {}, "scratch": {}}, data, checkpoint)
    assert len(cells) == 6 and {c.checkpoint for c in cells} == {str(checkpoint.resolve())}
    assert reads[checkpoint.resolve()] == 1
