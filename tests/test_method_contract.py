"""The method contract: a RunContext instead of attributes, after_backward, and check() before any work."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks.backbones import BACKBONES, SegModel
from benchmarks.cli import main
from methods.base import METHODS, Method, RunContext, register_method

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
    BACKBONES.register("test-flat")(_flat)
    register_method("test-recorder")(Recorder)
    yield
    BACKBONES._items.pop("test-flat")
    METHODS._items.pop("test-recorder")


def _args(tmp_path: Path, phantom_dir: Path, backbone: str, method: str) -> list[str]:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.format(backbone=backbone, method=method))
    return ["--suite", str(suite), "--data-root", str(phantom_dir), "--out", str(tmp_path / "out")] + [
        "--cache-dir",
        str(tmp_path / "cache"),
    ]


def test_impossible_freeze_fails_before_any_training(
    registered: None, tmp_path: Path, phantom_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(_args(tmp_path, phantom_dir, "test-flat", "freeze")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "method 'freeze'" in err[0] and "'encoder'" in err[0]
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "cache" / "sources").exists()  # no source model was trained


def test_hooks_get_the_run_context(registered: None, tmp_path: Path, phantom_dir: Path) -> None:
    assert main(_args(tmp_path, phantom_dir, "unet", "test-recorder")) == 0
    seen = Recorder.seen
    assert seen["total_steps"] == 2 and seen["seed"] == 0 and seen["cache_dir"] == tmp_path / "cache"
    assert seen["after_backward"] == [(0, True, True), (1, True, True)]


def test_default_check_refuses_missing_structure() -> None:
    with pytest.raises(Exception, match="encoder_stages"):
        METHODS.get("delta")().check(_flat(1, 2), None)
    METHODS.get("delta")().check(BACKBONES.get("unet")(1, 2), None)  # passes on a declared backbone
    assert torch.is_grad_enabled()


class Scorer(Method):
    """Plain fine-tuning that reports a score of its own, as a transferability plugin would."""

    def result_columns(self) -> dict:
        return {"my_score": float(self.run.seed) - 0.5}


def test_a_new_score_column_reaches_the_leaderboard(tmp_path: Path, phantom_dir: Path) -> None:
    from leaderboard.build import main as build

    register_method("test-scorer")(Scorer)
    try:
        args = _args(tmp_path, phantom_dir, "unet", "test-scorer, scratch")
        assert main(args) == 0
    finally:
        METHODS._items.pop("test-scorer")
    results, site = str(tmp_path / "out"), str(tmp_path / "site")
    assert build(["--results", results, "--out", site, "--control", "test-scorer"]) == 0
    page = (tmp_path / "site" / "leaderboard.md").read_text()
    assert "MY SCORE" in page and "-0.500" in page
