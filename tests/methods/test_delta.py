"""DELTA: zero for identical models, positive after perturbation, numpy-exact on random feature maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from methods.base import METHODS, MethodConfigError, RunContext
from methods.delta import feature_distance
from methods.losses import base_loss

CPU = torch.device("cpu")


def numpy_distance(target: list[np.ndarray], source: list[np.ndarray]) -> float:
    """Sum over stages of 0.5 * the summed squared difference (float64)."""
    return float(sum(0.5 * ((t.astype(np.float64) - s) ** 2).sum() for t, s in zip(target, source)))


def test_distance_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    shapes = [(2, 16, 16, 16), (2, 32, 8, 8), (2, 256, 2, 2)]
    t = [rng.normal(size=s).astype(np.float32) for s in shapes]
    s = [rng.normal(size=sh).astype(np.float32) for sh in shapes]
    got = feature_distance([torch.from_numpy(a) for a in t], [torch.from_numpy(a) for a in s])
    assert got.item() == pytest.approx(numpy_distance(t, s), rel=1e-5)


@pytest.mark.parametrize("backbone", ["unet", "smp-resnet18"])
def test_zero_for_identical_then_positive(pair, batch, backbone: str) -> None:
    source, target = pair(backbone, source_classes=2, target_classes=2)  # nothing newly initialised
    method = METHODS.get("delta")(alpha=1.0)
    method.prepare(RunContext(source, target, [], CPU))
    target.eval()  # same normalisation mode as the frozen source
    b = batch(2)
    assert method.loss(b, target(b["image"]), target).item() == pytest.approx(
        base_loss(target(b["image"]), b["label"]).item(), abs=0.0
    )
    assert method.penalty(b["image"]).item() == 0.0  # the forward above is the latest one captured

    with torch.no_grad():
        target.get_submodule(target.encoder[0]).apply(
            lambda m: m.weight.mul_(1.5) if isinstance(m, torch.nn.Conv2d) else None
        )
    target(b["image"])
    assert method.penalty(b["image"]).item() > 0


def test_method_value_matches_numpy_on_captured_maps(pair, batch) -> None:
    source, target = pair("unet", source_classes=3, target_classes=2)  # head re-initialised
    method = METHODS.get("delta")(alpha=0.7, beta=0.1)
    method.prepare(RunContext(source, target, [], CPU))
    with torch.no_grad():
        for p in target.body.parameters():
            p.add_(0.01 * torch.randn_like(p))
    maps: dict[str, list[np.ndarray]] = {"source": [], "target": []}
    for key, model in (("source", source), ("target", target)):
        for name in model.encoder_stages:
            model.get_submodule(name).register_forward_hook(
                lambda m, a, out, key=key: maps[key].append(out.detach().numpy().copy())
            )
    b = batch(2)
    logits = target(b["image"])
    got = method.loss(b, logits, target).item()
    head = sum((p.detach().double().numpy() ** 2).sum() for p in target.head.parameters())
    expected = base_loss(logits, b["label"]).item() + 0.7 * numpy_distance(maps["target"], maps["source"]) + 0.05 * head
    assert got == pytest.approx(expected, rel=1e-5)


def test_refuses_missing_source_and_mismatched_models(pair) -> None:
    with pytest.raises(MethodConfigError, match="source model"):
        METHODS.get("delta")().prepare(RunContext(None, pair("unet")[1], [], CPU))
    with pytest.raises(MethodConfigError, match="encoder stages"):
        METHODS.get("delta")().prepare(RunContext(pair("basicunet")[0], pair("unet")[1], [], CPU))
    with pytest.raises(MethodConfigError, match="alpha"):
        METHODS.get("delta")(alpha=-0.1)
