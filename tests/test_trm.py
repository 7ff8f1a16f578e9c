"""TRM: the risk-weighted loss against a plain reference, its gradient, maps and an end-to-end cell."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datasets.slices import SliceDataset, SliceSet
from methods import METHODS
from methods.base import MethodConfigError, RunContext
from methods.trm import WEIGHT_KEY, risk_weighted_loss

CPU = torch.device("cpu")
NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _reference(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray, normalize: str, scope: str) -> float:
    """sum over the scope's pixels of W_p CE_p / (foreground or pixel count), averaged over images, plain loops."""
    total = 0.0
    for i in range(logits.shape[0]):
        acc = 0.0
        for y in range(labels.shape[1]):
            for x in range(labels.shape[2]):
                if scope == "foreground" and labels[i, y, x] == 0:
                    continue
                z = logits[i, :, y, x].astype(np.float64)
                log_softmax = z - z.max() - np.log(np.exp(z - z.max()).sum())
                acc += weights[i, y, x] * -log_softmax[labels[i, y, x]]
        by_foreground = normalize == "foreground" or scope == "foreground"
        denom = max(int((labels[i] != 0).sum()), 1) if by_foreground else labels[i].size
        total += acc / denom
    return total / logits.shape[0]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=NEEDS_CUDA)])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("normalize", "scope"), [("foreground", "all"), ("all", "all"), ("all", "foreground")])
def test_matches_plain_reference(seed: int, normalize: str, scope: str, device: str) -> None:
    rng = np.random.default_rng(seed)
    b, c, h, w = 3, int(rng.integers(2, 5)), 6, 5
    logits = rng.normal(size=(b, c, h, w)).astype(np.float32)
    labels = rng.integers(0, c, size=(b, h, w))
    labels[0] = 0  # an image with no foreground
    weights = rng.uniform(1, 2, size=(b, h, w)).astype(np.float32)
    got = risk_weighted_loss(*(torch.from_numpy(a).to(device) for a in (logits, labels, weights)), normalize, scope)
    assert got.device.type == device
    assert float(got) == pytest.approx(_reference(logits, labels, weights, normalize, scope), rel=1e-5)


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
    return SliceSet.of_volume(images, labels)


def test_prepare_attaches_weights_and_scores(tmp_path) -> None:
    from benchmarks.backbones import build_backbone

    torch.manual_seed(0)
    source = build_backbone("unet", 1, 2).eval().requires_grad_(False)
    target = build_backbone("unet", 1, 2)
    data = SliceDataset(_slices(), augment=True, seed=0)
    pixel = {"granularity": "pixel", "weighting": "linear", "alpha": 2.0}
    trm = METHODS.get("trm")(**pixel)
    trm.prepare(RunContext(source, target, data, torch.device("cpu"), cache_dir=tmp_path))
    weights = data.maps[WEIGHT_KEY]
    assert weights.shape == data.slices.labels.shape and weights.dtype == np.float16
    assert weights.min() >= 1.0 and weights.max() <= 3.0  # W = 1 + alpha R, R in [0, 1]
    scores = trm.result_columns()
    assert scores["leep"] <= 0 and scores["nce"] <= 0
    batch = data[0]
    assert WEIGHT_KEY in batch and batch[WEIGHT_KEY].shape == batch["label"].shape
    # A second prepare on the same source and slices reuses the cached maps.
    again = METHODS.get("trm")(**pixel)
    fresh = SliceDataset(_slices(), seed=0)
    again.prepare(RunContext(source, target, fresh, torch.device("cpu"), cache_dir=tmp_path))
    assert np.array_equal(fresh.maps[WEIGHT_KEY], weights)
    assert len(list((tmp_path / "riskmaps").glob("*.npz"))) == 1


def test_weighting_none_gives_unit_weights() -> None:
    from benchmarks.backbones import build_backbone

    source = build_backbone("unet", 1, 2).eval().requires_grad_(False)
    data = SliceDataset(_slices(), seed=0)
    trm = METHODS.get("trm")(weighting="none")
    trm.prepare(RunContext(source, build_backbone("unet", 1, 2), data, torch.device("cpu")))
    assert np.all(data.maps[WEIGHT_KEY] == 1)


def test_refuses_random_init_and_bad_choices() -> None:
    from benchmarks.backbones import build_backbone

    with pytest.raises(MethodConfigError, match="needs a source model"):
        METHODS.get("trm")().prepare(RunContext(None, build_backbone("unet", 1, 2), SliceDataset(_slices()), "cpu"))
    with pytest.raises(MethodConfigError, match="risk"):
        METHODS.get("trm")(risk="bogus")
    with pytest.raises(MethodConfigError, match="granularity"):
        METHODS.get("trm")(granularity="voxel")
    with pytest.raises(MethodConfigError, match="stride"):
        METHODS.get("trm")(stride=0)
    with pytest.raises(MethodConfigError, match="ce_scope"):
        METHODS.get("trm")(ce_scope="background")
    too_wide = METHODS.get("trm")(stride=64)  # the slices are 32 x 32
    with pytest.raises(MethodConfigError, match="stride"):
        too_wide.prepare(
            RunContext(
                build_backbone("unet", 1, 2).eval(), build_backbone("unet", 1, 2), SliceDataset(_slices()), "cpu"
            )
        )


def test_location_map_is_exp_minus_window_leep_for_every_slice(tmp_path) -> None:
    from benchmarks.backbones import build_backbone
    from methods.transferability import expand_windows, location_leep_map

    torch.manual_seed(0)
    source = build_backbone("unet", 1, 3).eval().requires_grad_(False)
    slices = _slices(size=32)  # 32 = 6 windows of 5 + 2 remainder rows and columns
    data = SliceDataset(slices, seed=0)
    defaults = METHODS.get("trm")().params  # docs/trm-study.md: the default and why
    assert (defaults["granularity"], defaults["weighting"], defaults["ce_scope"]) == ("location", "inverse", "all")
    trm = METHODS.get("trm")(stride=5)  # location, inverse weights
    trm.prepare(RunContext(source, build_backbone("unet", 1, 2), data, torch.device("cpu"), cache_dir=tmp_path))
    weights = data.maps[WEIGHT_KEY]
    assert weights.shape == slices.labels.shape and weights.dtype == np.float16
    assert all(np.array_equal(weights[0], w) for w in weights)  # one map for every training slice
    with torch.no_grad():
        probs = torch.softmax(source(torch.from_numpy(slices.images)), 1)
    leep = location_leep_map(probs.double(), torch.from_numpy(slices.labels).long(), 2, 5)
    expected = expand_windows(torch.exp(-leep), (32, 32), 5).numpy()
    np.testing.assert_allclose(weights[0].astype(np.float64), expected, rtol=2e-3)  # float16 storage
    assert np.array_equal(weights[0][30:, 30:], np.broadcast_to(weights[0][29, 29], (2, 2)))


def test_bad_trm_values_are_one_line_cli_errors(tmp_path, capsys) -> None:
    from benchmarks.cli import main

    out = tmp_path / "out"
    for param in ("trm.stride=0", "trm.granularity=voxel"):
        code = main(
            ["--suite", "phantom", "--method", "trm", "--param", param, "--steps", "1", "--out", str(out)]
            + ["--cache-dir", str(tmp_path)]
        )
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and param.split(".")[1].split("=")[0] in err
    assert not out.exists()


@pytest.mark.slow
def test_trm_cell_end_to_end(tmp_path) -> None:
    from benchmarks.cli import main

    out, cache = tmp_path / "out", tmp_path / "cache"
    location = ["--param", "trm.granularity=location", "--param", "trm.ce_scope=foreground"]
    args = [
        "--suite",
        "phantom",
        "--method",
        "trm",
        "class-weighted",
        *location,
        "--steps",
        "3",
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
    ]
    assert main(args) == 0
    import json

    import pandas as pd

    rows = pd.concat(pd.read_parquet(p) for p in (out / "cells").glob("*.parquet"))
    trm = rows[rows["method"] == "trm"]
    assert (rows["status"] == "ok").all() and trm["leep"].notna().all() and trm["nce"].notna().all()
    params = [json.loads(p) for p in trm["method_params"]]
    assert all(p["granularity"] == "location" and p["ce_scope"] == "foreground" for p in params)
    assert rows.loc[rows["method"] == "class-weighted", "leep"].isna().all()


@pytest.mark.slow
def test_riskmap_figure_and_bad_task(tmp_path, capsys) -> None:
    from benchmarks.riskmap import main

    png = tmp_path / "fig.png"
    args = ["--suite", "phantom", "--steps", "2", "--slices", "2", "--cache-dir", str(tmp_path / "cache")]
    assert main([*args, "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "fine-tuned model: not in the cache, trained" in capsys.readouterr().out
    assert main([*args, "--out", str(png)]) == 0  # the second figure reuses both models
    printed = capsys.readouterr().out
    assert "source model: loaded" in printed and "fine-tuned model: loaded" in printed
    assert main([*args, "--target", "01-t1-XX", "--out", str(tmp_path / "x.png")]) == 2
    assert "unknown region 'XX'" in capsys.readouterr().err
