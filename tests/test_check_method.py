"""The conformance checker passes every registered method and names the failing check of broken ones."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from benchmarks.check_method import main, run_checks
from methods.base import METHODS, HParam, Method


class NanLoss(Method):
    """Plain fine-tuning whose loss is NaN."""

    def loss(self, batch, logits, target_model):  # noqa: ANN001, ANN201
        return super().loss(batch, logits, target_model) * float("nan")


class SneakyHead(Method):
    """Keeps the head out of the optimiser, then changes it anyway."""

    def param_groups(self, target_model, lr):  # noqa: ANN001, ANN201
        return [{"params": [p for n, p in target_model.named_parameters() if not n.startswith("head")], "lr": lr}]

    def on_step(self, step, target_model):  # noqa: ANN001, ANN201
        with torch.no_grad():
            target_model.head.weight.mul_(1.5)


class Unbounded(Method):
    """Declares a weight that must be >= 0 and a fraction in [0, 1]; the base class enforces both."""

    hparams = {
        "weight": HParam(0.1, "a non-negative weight", low=0),
        "share": HParam(0.5, "a share", low=0, high=1),
    }


@pytest.fixture
def broken() -> Iterator[None]:
    with METHODS.temporarily("test-nan-loss", NanLoss), METHODS.temporarily("test-sneaky-head", SneakyHead):
        yield


@pytest.mark.parametrize("name", METHODS.names())
def test_every_registered_method_passes(name: str) -> None:
    """Derived from the registry: a new built-in or installed method is checked without editing this test."""
    results = run_checks(name, ["unet"])
    assert [r.line() for r in results] == ["PASS declarations", "PASS training on unet"]


def test_command_line_passes_finetune(capsys: pytest.CaptureFixture) -> None:
    assert main(["finetune"]) == 0
    assert "finetune: 2 passed, 0 failed" in capsys.readouterr().out


def test_declared_ranges_are_checked() -> None:
    from benchmarks.check_method import check_declarations

    with METHODS.temporarily("test-bounded", Unbounded):
        check_declarations("test-bounded")  # the base class refuses -1, 1.5 and 2: the check passes


def test_nan_loss_fails_with_its_reason(broken: None) -> None:
    results = {r.check: r for r in run_checks("test-nan-loss", ["unet"])}
    assert results["declarations"].ok
    assert not results["training on unet"].ok
    assert results["training on unet"].reason.startswith("loss is not finite at step 0")


def test_changing_a_frozen_parameter_fails(broken: None, capsys: pytest.CaptureFixture) -> None:
    assert main(["test-sneaky-head"]) == 1
    out = capsys.readouterr().out
    assert "FAIL training on unet: parameter head.weight is kept out of training but changed" in out


def test_unknown_names_exit_2(capsys: pytest.CaptureFixture) -> None:
    assert main(["no-such-method"]) == 2
    assert main(["finetune", "--backbone", "no-such-backbone"]) == 2
    assert capsys.readouterr().err.count("error:") == 2


class NeedsGraph(Method):
    """Plain fine-tuning that declares a structure no backbone has."""

    requires = ("graph",)


def test_a_declined_backbone_is_skipped_with_the_reason(capsys: pytest.CaptureFixture) -> None:
    with METHODS.temporarily("test-needs-graph", NeedsGraph):
        assert main(["test-needs-graph"]) == 0
    out = capsys.readouterr().out
    assert "SKIP training on unet: method 'test-needs-graph' needs a backbone that declares 'graph'" in out
    assert "test-needs-graph: 1 passed, 0 failed, 1 skipped" in out
