"""class-weighted: median-frequency class weights against a plain count, and its loss against torch's formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datasets.slices import SliceDataset, SliceSet
from methods import METHODS
from methods.base import RunContext
from methods.class_weighted import median_frequency_weights


def _reference_weights(labels: np.ndarray, num_classes: int) -> list[float]:
    counts = [int((labels == c).sum()) for c in range(num_classes)]
    freqs = [n / sum(counts) for n in counts]
    present = sorted(f for f in freqs if f > 0)
    mid = len(present) // 2
    median = present[mid] if len(present) % 2 else (present[mid - 1] + present[mid]) / 2
    return [median / f if f > 0 else 0.0 for f in freqs]


@pytest.mark.parametrize("seed", range(4))
def test_median_frequency_weights_match_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    c = int(rng.integers(2, 6))
    labels = rng.choice(c, size=(3, 7, 9), p=rng.dirichlet(np.ones(c))).astype(np.uint8)
    labels[labels == c - 1] = 0 if seed == 0 else c - 1  # seed 0: a class absent from the slices
    np.testing.assert_allclose(median_frequency_weights(labels, c), _reference_weights(labels, c), rtol=1e-12)


def test_rare_foreground_is_up_weighted_and_empty_labels_are_refused() -> None:
    labels = np.zeros((2, 10, 10), np.uint8)
    labels[0, :2, :2] = 1  # 4 of 200 pixels
    w = median_frequency_weights(labels, 2)
    assert w[1] / w[0] == pytest.approx(196 / 4)
    with pytest.raises(ValueError, match="labelled pixel"):
        median_frequency_weights(np.zeros((0, 4, 4), np.uint8), 2)


def test_loss_is_weighted_ce_plus_dice() -> None:
    from benchmarks.backbones import build_backbone
    from methods.losses import soft_dice_loss

    rng = np.random.default_rng(0)
    labels = np.zeros((4, 32, 32), np.uint8)
    labels[:, 5:12, 8:20] = 1
    images = (labels[:, None] + rng.normal(0, 0.3, (4, 1, 32, 32))).astype(np.float32)
    slices = SliceSet(images, labels, np.zeros(4, np.int32), np.arange(4, dtype=np.int32), ["s"], {}, {})
    method = METHODS.get("class-weighted")()
    target = build_backbone("unet", 1, 2)
    method.prepare(RunContext(None, target, SliceDataset(slices), torch.device("cpu")))
    logits = torch.randn(4, 2, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.from_numpy(labels).long()
    w = torch.tensor(_reference_weights(labels, 2), dtype=torch.float32)
    ce = -(w[y] * torch.log_softmax(logits, 1).gather(1, y[:, None])[:, 0]).sum() / w[y].sum()
    got = method.loss({"label": y}, logits, target)
    assert float(got) == pytest.approx(float(ce + soft_dice_loss(logits, y)), rel=1e-5)
