"""TRM: the risk-weighted loss against a plain reference, its gradient, maps and an end-to-end cell."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datasets.slices import SliceDataset, SliceSet
from methods import METHODS
from methods.base import MethodConfigError
from methods.trm import WEIGHT_KEY, risk_weighted_loss

NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _reference(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray, normalize: str) -> float:
    """sum_p W_p CE_p / max(|F_i|, 1) averaged over images, written with plain loops."""
    total = 0.0
    for i in range(logits.shape[0]):
        acc = 0.0
        for y in range(labels.shape[1]):
            for x in range(labels.shape[2]):
                z = logits[i, :, y, x].astype(np.float64)
                log_softmax = z - z.max() - np.log(np.exp(z - z.max()).sum())
                acc += weights[i, y, x] * -log_softmax[labels[i, y, x]]
        denom = max(int((labels[i] != 0).sum()), 1) if normalize == "foreground" else labels[i].size
        total += acc / denom
    return total / logits.shape[0]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=NEEDS_CUDA)])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("normalize", ["foreground", "all"])
def test_matches_plain_reference(seed: int, normalize: str, device: str) -> None:
    rng = np.random.default_rng(seed)
    b, c, h, w = 3, int(rng.integers(2, 5)), 6, 5
    logits = rng.normal(size=(b, c, h, w)).astype(np.float32)
    labels = rng.integers(0, c, size=(b, h, w))
    labels[0] = 0  # an image with no foreground
    weights = rng.uniform(1, 2, size=(b, h, w)).astype(np.float32)
    got = risk_weighted_loss(*(torch.from_numpy(a).to(device) for a in (logits, labels, weights)), normalize)
    assert got.device.type == device
    assert float(got) == pytest.approx(_reference(logits, labels, weights, normalize), rel=1e-5)


def test_finite_without_foreground_and_gradient_follows_weights() -> None:
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    weights = torch.zeros(2, 4, 4)
    weights[0, 1, 2] = 1.5
    weights[1, 3, 0] = 0.5
    loss = risk_weighted_loss(logits, labels, weights)
    assert torch.isfinite(loss)
    loss.backward()
    moved = logits.grad.abs().sum(1) > 0
    assert torch.equal(moved, weights > 0)


def _slices(n: int = 6, size: int = 32) -> SliceSet:
    rng = np.random.default_rng(0)
    labels = np.zeros((n, size, size), np.uint8)
    labels[:, 8:18, 10:22] = 1
    images = (labels[:, None].astype(np.float32) + rng.normal(0, 0.3, (n, 1, size, size))).astype(np.float32)
    return SliceSet(
        images,
        labels,
        np.zeros(n, np.int32),
        np.arange(n, dtype=np.int32),
        ["s"],
        {"s": (size, size, n)},
        {"s": (1.0, 1.0, 1.0)},
    )


def test_prepare_attaches_weights_and_scores(tmp_path) -> None:
    from benchmarks.backbones import build_backbone

    torch.manual_seed(0)
    source = build_backbone("unet", 1, 2).eval().requires_grad_(False)
    target = build_backbone("unet", 1, 2)
    data = SliceDataset(_slices(), augment=True, seed=0)
    trm = METHODS.get("trm")(alpha=2.0)
    trm.cache_dir = tmp_path
    trm.prepare(source, target, data, torch.device("cpu"))
    weights = data.maps[WEIGHT_KEY]
    assert weights.shape == data.slices.labels.shape and weights.dtype == np.float16
    assert weights.min() >= 1.0 and weights.max() <= 3.0  # W = 1 + alpha R, R in [0, 1]
    scores = trm.result_columns()
    assert scores["leep"] <= 0 and scores["nce"] <= 0
    batch = data[0]
    assert WEIGHT_KEY in batch and batch[WEIGHT_KEY].shape == batch["label"].shape
    # A second prepare on the same source and slices reuses the cached maps.
    again = METHODS.get("trm")(alpha=2.0)
    again.cache_dir = tmp_path
    fresh = SliceDataset(_slices(), seed=0)
    again.prepare(source, target, fresh, torch.device("cpu"))
    assert np.array_equal(fresh.maps[WEIGHT_KEY], weights)
    assert len(list((tmp_path / "riskmaps").glob("*.npz"))) == 1


def test_weighting_none_gives_unit_weights() -> None:
    from benchmarks.backbones import build_backbone

    source = build_backbone("unet", 1, 2).eval().requires_grad_(False)
    data = SliceDataset(_slices(), seed=0)
    METHODS.get("trm")(weighting="none").prepare(source, build_backbone("unet", 1, 2), data, torch.device("cpu"))
    assert np.all(data.maps[WEIGHT_KEY] == 1)


def test_refuses_random_init_and_bad_choices() -> None:
    from benchmarks.backbones import build_backbone

    with pytest.raises(MethodConfigError, match="needs a source model"):
        METHODS.get("trm")().prepare(None, build_backbone("unet", 1, 2), SliceDataset(_slices()), "cpu")
    with pytest.raises(MethodConfigError, match="risk"):
        METHODS.get("trm")(risk="bogus")


def test_trm_cell_end_to_end(tmp_path) -> None:
    from benchmarks.run import main

    out, cache = tmp_path / "out", tmp_path / "cache"
    assert main(["--method", "trm", "finetune", "--steps", "2", "--out", str(out), "--cache-dir", str(cache)]) == 0
    import pandas as pd

    rows = pd.concat(pd.read_parquet(p) for p in (out / "cells").glob("*.parquet"))
    trm = rows[rows["method"] == "trm"]
    assert (trm["status"] == "ok").all() and trm["leep"].notna().all() and trm["nce"].notna().all()
    assert rows.loc[rows["method"] == "finetune", "leep"].isna().all()


def test_riskmap_figure_and_bad_task(tmp_path, capsys) -> None:
    from benchmarks.riskmap import main

    png = tmp_path / "fig.png"
    args = ["--steps", "2", "--slices", "2", "--cache-dir", str(tmp_path / "cache")]
    assert main([*args, "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert main([*args, "--target", "01-t1-XX", "--out", str(tmp_path / "x.png")]) == 2
    assert "unknown region 'XX'" in capsys.readouterr().err
