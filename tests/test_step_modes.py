"""Numeric modes of the training step (--amp bf16): a different setting, deterministic, default keys unchanged."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from benchmarks.backbones import build_backbone
from benchmarks.cell import setting_columns
from benchmarks.config import Budget, Cell
from benchmarks.sources import source_key
from benchmarks.train import autocast, train
from datasets.slices import SliceDataset, SliceSet

CELL = Cell("default", "phantom", "01-t2-WT", "01-t1-WT", "finetune", "unet", 0, 3)


def test_default_modes_keep_existing_keys() -> None:
    assert CELL.key == "960be08228827859"  # pinned: unchanged by Budget.amp and Budget.compile at their defaults
    for change in ({"amp": "bf16"}, {"compile": True}):
        other = replace(CELL, budget=replace(CELL.budget, **change))
        assert other.key != CELL.key and source_key(other) != source_key(CELL)
        assert {k: setting_columns(other)[k] for k in change} == change
    assert setting_columns(CELL)["amp"] == "off" and setting_columns(CELL)["compile"] is False


def _train(amp: str) -> tuple[float, torch.Tensor]:
    rng = np.random.default_rng(0)
    n, size = 12, 32
    slices = SliceSet.of_volume(
        rng.normal(size=(n, 1, size, size)).astype(np.float32), rng.integers(0, 2, (n, size, size)).astype(np.uint8)
    )
    torch.manual_seed(0)
    model = build_backbone("unet", 1, 2)
    budget = Budget(batch_size=4, size=size, amp=amp)
    loss = train(model, SliceDataset(slices, augment=True, seed=0), 3, budget, torch.device("cpu"), seed=0)
    return loss, torch.cat([p.detach().flatten() for p in model.parameters()])


def test_bf16_is_deterministic_and_differs_from_float32() -> None:
    loss, weights = _train("bf16")
    again, same = _train("bf16")
    reference, float32 = _train("off")
    assert np.isfinite(loss) and loss == again and torch.equal(weights, same)
    assert not torch.equal(weights, float32)  # another numeric mode: another setting
    assert abs(loss - reference) < 0.1 * abs(reference)


def test_unknown_amp_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="amp"):
        autocast(Budget(amp="fp8"), torch.device("cpu"))
