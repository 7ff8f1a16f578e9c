"""The method contract: a RunContext instead of attributes, after_backward, and check() skipping a cell (a reason)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks.backbones import BACKBONES
from benchmarks.cli import main
from methods.base import METHODS, Method, RunContext
from methods.model import SegModel

SUITE = """\
name: contract
dataset: phantom
backbone: {backbone}
seeds: [0]
few_shot: [1]
methods: [{method}]
budget: {{source_steps: 2, target_steps: 2, batch_size: 4, size: 32}}
transfers:
  - {{source: "*-t2-WT", target: "*-t1-WT"}}
"""


def _flat(in_channels: int, num_classes: int) -> SegModel:
    """A backbone that declares no encoder: nothing can be frozen or hooked by stage."""
    return SegModel(nn.Conv2d(in_channels, 4, 3, padding=1), 4, num_classes, encoder=[])


class Recorder(Method):
    """Plain fine-tuning that records what the runner handed it."""

    seen: dict = {}

    def prepare(self, run: RunContext) -> None:
        super().prepare(run)
        Recorder.seen = {"total_steps": run.total_steps, "cache_dir": run.cache_dir, "seed": run.seed}

    def after_backward(self, step: int, target_model: nn.Module) -> None:
        grads = [p.grad for p in target_model.parameters() if p.requires_grad]
        Recorder.seen.setdefault("after_backward", []).append(
            (step, all(g is not None for g in grads), self.run.optimizer is not None)
        )


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 subjects in one institution (32x32x16): enough for a train/val/test split."""
    from datasets.phantom import generate_phantom

    return generate_phantom(tmp_path_factory.mktemp("data") / "phantom", n_subjects=6, n_groups=1, shape=(32, 32, 16))


@pytest.fixture
def registered() -> Iterator[None]:
    with BACKBONES.temporarily("test-flat", _flat), METHODS.temporarily("test-recorder", Recorder):
        yield


def _args(tmp_path: Path, phantom_dir: Path, backbone: str, method: str) -> list[str]:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.format(backbone=backbone, method=method))
    return ["--suite", str(suite), "--data-root", str(phantom_dir), "--out", str(tmp_path / "out")] + [
        "--cache-dir",
        str(tmp_path / "cache"),
    ]


def test_a_backbone_the_method_declines_skips_its_cells_with_the_reason(
    registered: None, tmp_path: Path, phantom_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    """freeze cannot freeze an encoder the backbone does not declare: its cell is skipped, the grid goes on."""
    import pandas as pd

    from leaderboard.store import failed_cells, load_store, missing_cells

    assert main(_args(tmp_path, phantom_dir, "test-flat", "freeze, test-recorder")) == 0
    captured = capsys.readouterr()
    reason = "method 'freeze' needs a backbone that declares 'encoder'; SegModel does not"
    assert f"skipped: freeze: {reason}" in captured.out  # the run's summary
    assert "1 skipped by their method" in captured.out
    rows = pd.concat(pd.read_parquet(p) for p in (tmp_path / "out" / "cells").glob("*.parquet"))
    skipped = rows[rows["method"] == "freeze"]
    assert list(skipped["status"]) == ["skipped"] and list(skipped["error"]) == [reason]
    assert set(rows.loc[rows["method"] == "test-recorder", "status"]) == {"ok"}
    frame = load_store(tmp_path / "out")
    assert failed_cells(frame).empty  # skipped is not failed
    missing = missing_cells(frame, None)
    assert list(missing["variant"]) == ["freeze"] and list(missing["reason"]) == [reason]
    assert main(_args(tmp_path, phantom_dir, "test-flat", "freeze")) == 0  # a skipped cell counts as done
    assert "1 cells, 1 already done, running 0" in capsys.readouterr().err


def test_a_declined_method_trains_no_source_model(registered: None, tmp_path: Path, phantom_dir: Path) -> None:
    assert main(_args(tmp_path, phantom_dir, "test-flat", "freeze")) == 0
    assert not (tmp_path / "cache" / "sources").exists()  # skipped before the source model was trained


def test_hooks_get_the_run_context(registered: None, tmp_path: Path, phantom_dir: Path) -> None:
    assert main(_args(tmp_path, phantom_dir, "unet", "test-recorder")) == 0
    seen = Recorder.seen
    assert seen["total_steps"] == 2 and seen["seed"] == 0 and seen["cache_dir"] == tmp_path / "cache"
    assert seen["after_backward"] == [(0, True, True), (1, True, True)]


def test_requires_is_one_check_with_one_message() -> None:
    """check() gives the reason for a backbone lacking a required structure; prepare() refuses it in the same words."""
    from methods.base import MethodConfigError

    reason = "method 'delta' needs a backbone that declares 'encoder_stages'; SegModel does not"
    assert METHODS.get("delta")().check(_flat(1, 2), None) == reason
    assert METHODS.get("delta")().check(BACKBONES.get("unet")(1, 2), None) is None  # a declared backbone
    with pytest.raises(MethodConfigError) as info:
        METHODS.get("delta")().prepare(RunContext(_flat(1, 2), _flat(1, 2), [], torch.device("cpu")))
    assert str(info.value) == reason
    assert METHODS.get("freeze")(scope="encoder+decoder").check(_flat(1, 2), None) is None  # needs only a body
    assert torch.is_grad_enabled()


class Scorer(Method):
    """Plain fine-tuning that reports a score of its own, as a transferability plugin would."""

    def result_columns(self) -> dict:
        return {"my_score": float(self.run.seed) - 0.5}


def test_a_new_score_column_reaches_the_leaderboard(tmp_path: Path, phantom_dir: Path) -> None:
    from leaderboard.build import main as build

    with METHODS.temporarily("test-scorer", Scorer):
        assert main(_args(tmp_path, phantom_dir, "unet", "test-scorer, scratch")) == 0
    results, site = str(tmp_path / "out"), str(tmp_path / "site")
    assert build(["--results", results, "--out", site, "--control", "test-scorer"]) == 0
    page = (tmp_path / "site" / "leaderboard.md").read_text()
    assert "MY SCORE" in page and "-0.500" in page
