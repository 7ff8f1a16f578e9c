"""The conformance checker passes a correct method and names the failing check of broken ones."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from benchmarks.check_method import main, run_checks
from methods.base import METHODS, Method, register_method


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


@pytest.fixture
def broken() -> Iterator[None]:
    register_method("test-nan-loss")(NanLoss)
    register_method("test-sneaky-head")(SneakyHead)
    yield
    for name in ("test-nan-loss", "test-sneaky-head"):
        METHODS._items.pop(name)


def test_finetune_passes(capsys: pytest.CaptureFixture) -> None:
    assert main(["finetune"]) == 0
    assert "finetune: 2 passed, 0 failed" in capsys.readouterr().out


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
