"""BSS: the penalty equals a numpy SVD reference, on random matrices and on a model's bottleneck."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from methods.base import METHODS, MethodConfigError, RunContext
from methods.bss import bss_penalty
from methods.losses import base_loss

CPU = torch.device("cpu")


def numpy_bss(features: np.ndarray, k: int) -> float:
    """The k smallest squared singular values (all of them when min(B, C) <= k)."""
    sigma = np.linalg.svd(features.astype(np.float64), compute_uv=False)  # descending
    return float((np.sort(sigma)[:k] ** 2).sum())


@pytest.mark.parametrize(
    ("b", "c", "k"), [(4, 16, 1), (8, 6, 2), (5, 32, 3), (2, 8, 1), (1, 8, 1), (3, 8, 3), (2, 8, 4)]
)
def test_penalty_matches_numpy_svd(b: int, c: int, k: int) -> None:
    features = np.random.default_rng(b * 100 + c + k).normal(size=(b, c)).astype(np.float32)
    got = bss_penalty(torch.from_numpy(features), k)
    assert got.item() == pytest.approx(numpy_bss(features, k), rel=1e-4, abs=1e-6)


def test_penalty_has_finite_gradient() -> None:
    features = torch.randn(4, 16, requires_grad=True)
    bss_penalty(features, 2).backward()
    assert torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0


@pytest.mark.parametrize("backbone", ["unet", "basicunet"])
def test_method_penalises_pooled_bottleneck(pair, batch, backbone: str) -> None:
    source, target = pair(backbone)
    method = METHODS.get("bss")(k=1, eta=0.5)
    method.prepare(RunContext(source, target, [], CPU))
    seen = []
    target.get_submodule(target.encoder_stages[-1]).register_forward_hook(lambda m, a, out: seen.append(out))
    b = batch(2, batch=4)
    logits = target(b["image"])
    pooled = seen[0].detach().mean(dim=(2, 3)).numpy()
    expected = base_loss(logits, b["label"]).item() + 0.5 * numpy_bss(pooled, 1)
    assert method.loss(b, logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_bad_k_is_refused() -> None:
    with pytest.raises(MethodConfigError, match="k="):
        METHODS.get("bss")(k=0)
    with pytest.raises(MethodConfigError, match="eta"):
        METHODS.get("bss")(eta=-1.0)
