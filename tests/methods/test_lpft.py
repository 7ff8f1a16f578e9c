"""LP-FT: the probe is a converged logistic regression on the frozen body's features; then everything trains."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from methods.base import METHODS, MethodConfigError, RunContext

CPU = torch.device("cpu")


def scipy_logistic_regression(x: np.ndarray, y: np.ndarray, classes: int, l2: float) -> np.ndarray:
    """argmin mean CE(W x + b, y) + l2/2 ||W||^2 on raw features with scipy's L-BFGS (float64), as (W | b)."""
    n, d = x.shape

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[: classes * d].reshape(classes, d), theta[classes * d :]
        z = x @ w.T + b
        z = z - z.max(1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        loss = -np.log(p[np.arange(n), y]).mean() + 0.5 * l2 * (w**2).sum()
        g = p.copy()
        g[np.arange(n), y] -= 1
        g /= n
        return loss, np.concatenate([(g.T @ x + l2 * w).ravel(), g.sum(0)])

    res = minimize(objective, np.zeros(classes * (d + 1)), jac=True, method="L-BFGS-B", options={"gtol": 1e-10})
    return res.x


def test_probe_is_the_converged_logistic_regression(pair, train_set) -> None:
    source, target = pair("unet", source_classes=3, target_classes=2)
    data = train_set(2, slices=2, size=32)
    method = METHODS.get("lp-ft")(probe_l2=1e-2)
    body_before = {k: v.clone() for k, v in target.body.state_dict().items()}
    method.prepare(RunContext(source, target, data, CPU))
    assert all(torch.equal(body_before[k], v) for k, v in target.body.state_dict().items())  # body untouched
    target.eval()
    with torch.no_grad():
        feats = target.body(torch.from_numpy(data.slices.images)).permute(0, 2, 3, 1).reshape(-1, 16).double().numpy()
    theta = scipy_logistic_regression(feats, data.slices.labels.reshape(-1).astype(int), 2, 1e-2)
    got = np.concatenate(
        [target.head.weight.detach().reshape(2, 16).double().numpy().ravel(), target.head.bias.detach().numpy()]
    )

    # the reference standardises features by one global mean/std: the same optimum only when l2 is rescaled,
    # so compare the fitted probabilities (what the fine-tuning starts from) rather than the raw weights
    def probs(th: np.ndarray) -> np.ndarray:
        z = feats @ th[:32].reshape(2, 16).T + th[32:]
        return 1 / (1 + np.exp(z[:, 0] - z[:, 1]))

    assert np.abs(probs(got) - probs(theta)).max() < 0.05


def test_everything_trains_after_the_probe(pair, loop) -> None:
    source, target = pair("unet")
    states = []
    loop(METHODS.get("lp-ft")(), source, target, steps=2, lr=0.05, after_step=lambda s: states.append(1))
    assert all(p.requires_grad for p in target.parameters())
    assert not torch.equal(
        target.body.state_dict()[next(iter(target.body.state_dict()))],
        source.body.state_dict()[next(iter(source.body.state_dict()))],
    )


def test_refuses_bad_l2_and_missing_data(pair) -> None:
    with pytest.raises(MethodConfigError, match="probe_l2"):
        METHODS.get("lp-ft")(probe_l2=-1.0)
    with pytest.raises(MethodConfigError, match="training slices"):
        METHODS.get("lp-ft")().prepare(RunContext(None, pair("unet")[1], [], CPU))


def test_the_probe_subsample_follows_the_cell_seed(pair, train_set, monkeypatch) -> None:
    """Above PROBE_MAX_PIXELS the probe fits a subsample drawn with the run's seed: other seed, other probe."""
    import methods.lpft

    monkeypatch.setattr(methods.lpft, "PROBE_MAX_PIXELS", 512)  # 2 slices of 32x32 = 2048 pixels: subsampled
    data = train_set(2, slices=2, size=32)

    def probe(seed: int) -> torch.Tensor:
        source, target = pair("unet", source_classes=3, target_classes=2)
        METHODS.get("lp-ft")().prepare(RunContext(source, target, data, CPU, seed=seed))
        return target.head.weight.detach().clone()

    assert torch.equal(probe(0), probe(0)) and not torch.equal(probe(0), probe(1))
