"""L2-SP: zero penalty at the start, numpy-exact penalty after a manual weight change."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from methods.base import METHODS, MethodConfigError, RunContext

CPU = torch.device("cpu")
HEAD = {"head.weight", "head.bias"}


def numpy_l2sp(
    start: dict[str, np.ndarray], now: dict[str, np.ndarray], new: set[str], alpha: float, beta: float
) -> float:
    """alpha/2 sum (w - w0)^2 over transferred + beta/2 sum w^2 over new, in float64."""
    drift = sum(((now[k] - start[k]) ** 2).sum() for k in now if k not in new)
    fresh = sum((now[k] ** 2).sum() for k in new)
    return 0.5 * alpha * drift + 0.5 * beta * fresh


def params_np(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().double().numpy().copy() for k, v in model.named_parameters()}


def test_zero_at_start_when_everything_is_transferred(pair) -> None:
    source, target = pair("unet", source_classes=2, target_classes=2)  # head transferred too
    method = METHODS.get("l2sp")()
    method.prepare(RunContext(source, target, [], CPU))
    assert method.penalty().item() == 0.0


@pytest.mark.parametrize("backbone", ["unet", "smp-resnet18"])
def test_numpy_exact_after_manual_change(pair, backbone: str) -> None:
    source, target = pair(backbone, source_classes=3, target_classes=2)  # head re-initialised: new
    method = METHODS.get("l2sp")(alpha=0.3, beta=0.02)
    method.prepare(RunContext(source, target, [], CPU))
    start = params_np(target)
    assert method.penalty().item() == pytest.approx(numpy_l2sp(start, start, HEAD, 0.3, 0.02), rel=1e-5)

    rng = np.random.default_rng(0)
    with torch.no_grad():
        for p in target.parameters():
            p.add_(torch.from_numpy(rng.normal(0.0, 0.05, tuple(p.shape))).float())
    expected = numpy_l2sp(start, params_np(target), HEAD, 0.3, 0.02)
    assert expected > 0
    assert method.penalty().item() == pytest.approx(expected, rel=1e-4)


def test_no_weight_decay_and_gradient_flows(pair, batch) -> None:
    source, target = pair("unet")
    method = METHODS.get("l2sp")()
    method.prepare(RunContext(source, target, [], CPU))
    groups = method.param_groups(target, 1e-3)
    assert all(g["weight_decay"] == 0.0 for g in groups)
    assert sum(len(g["params"]) for g in groups) == len(list(target.parameters()))
    b = batch(2)
    method.loss(b, target(b["image"]), target).backward()
    assert target.head.weight.grad is not None


def test_refuses_bad_config_and_missing_source(pair) -> None:
    with pytest.raises(MethodConfigError, match="alpha"):
        METHODS.get("l2sp")(alpha=-1.0)
    with pytest.raises(MethodConfigError, match="source model"):
        METHODS.get("l2sp")().prepare(RunContext(None, pair("unet")[1], [], CPU))
