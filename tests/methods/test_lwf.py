"""LwF: numpy-exact distillation term; zero while the auxiliary head reproduces the source."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from methods.base import METHODS, MethodConfigError, RunContext
from methods.losses import base_loss
from methods.lwf import distillation

CPU = torch.device("cpu")


def numpy_kd(source: np.ndarray, student: np.ndarray, t: float) -> float:
    """Per-pixel KL(p_s || p) over axis 1, mean over pixels (float64)."""

    def log_softmax(z: np.ndarray) -> np.ndarray:
        z = z.astype(np.float64) / t
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    lp, lq = log_softmax(source), log_softmax(student)
    return float((np.exp(lp) * (lp - lq)).sum(axis=1).mean())


@pytest.mark.parametrize("t", [1.0, 2.0, 4.0])
def test_distillation_matches_numpy(t: float) -> None:
    rng = np.random.default_rng(int(t))
    s, q = (rng.normal(scale=3.0, size=(2, 4, 8, 8)).astype(np.float32) for _ in range(2))
    got = distillation(torch.from_numpy(s), torch.from_numpy(q), t)
    assert got.item() == pytest.approx(numpy_kd(s, q, t), rel=1e-5)


@pytest.mark.parametrize("backbone", ["unet", "smp-resnet18"])
def test_zero_when_aux_head_reproduces_source(pair, batch, backbone: str) -> None:
    source, target = pair(backbone, source_classes=3, target_classes=2)
    method = METHODS.get("lwf")()
    method.prepare(RunContext(source, target, [], CPU))
    target.eval()  # body identical to the source's, same normalisation mode
    b = batch(2)
    calls = []
    target.body.register_forward_hook(lambda m, a, out: calls.append(1))
    target(b["image"])
    assert method.penalty(b["image"]).item() == pytest.approx(0.0, abs=1e-6)
    assert len(calls) == 1  # the body ran once; the auxiliary head read its captured output


def test_aux_head_trains_and_term_matches_numpy(pair, batch, loop) -> None:
    source, target = pair("unet", source_classes=3, target_classes=2)
    method = METHODS.get("lwf")(**{"lambda": 0.5, "temperature": 3.0})
    loop(method, source, target, steps=2, lr=0.05)
    groups = method.param_groups(target, 1e-3)
    aux_ids = {id(p) for p in method.aux_head.parameters()}
    assert aux_ids <= {id(p) for g in groups for p in g["params"]}
    assert not torch.equal(method.aux_head.weight, source.head.weight)  # trained, source untouched
    b = batch(2, seed=3)
    logits = target(b["image"])
    with torch.no_grad():
        aux = method.aux_head(target.body(b["image"])).numpy()
        src = source(b["image"]).numpy()
    expected = base_loss(logits, b["label"]).item() + 0.5 * numpy_kd(src, aux, 3.0)
    assert method.loss(b, logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_refuses_missing_source_and_bad_params(pair) -> None:
    with pytest.raises(MethodConfigError, match="source model"):
        METHODS.get("lwf")().prepare(RunContext(None, pair("unet")[1], [], CPU))
    with pytest.raises(MethodConfigError, match="temperature"):
        METHODS.get("lwf")(temperature=0.0)
