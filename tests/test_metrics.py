"""Dice/HD95 against a plain scipy reference, and the empty-mask rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from benchmarks.metrics import dice_hd95


def _reference(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float, float]) -> tuple[float, float]:
    """Dice and HD95 written the plain way: surfaces by erosion, distances by scipy's EDT."""
    dice = 2 * np.logical_and(pred, truth).sum() / (pred.sum() + truth.sum())

    def surface(mask: np.ndarray) -> np.ndarray:
        return mask & ~ndimage.binary_erosion(mask)

    sp, st = surface(pred), surface(truth)
    d_to_t = ndimage.distance_transform_edt(~st, sampling=spacing)[sp]
    d_to_p = ndimage.distance_transform_edt(~sp, sampling=spacing)[st]
    return float(dice), float(max(np.percentile(d_to_t, 95), np.percentile(d_to_p, 95)))


def _blob(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    return ndimage.gaussian_filter(rng.normal(size=shape), 2.0) > 0.05


@pytest.mark.parametrize("seed", range(6))
def test_matches_scipy_reference_on_random_masks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(12, 24, size=3))
    spacing = tuple(float(s) for s in rng.uniform(0.5, 3.0, size=3))
    pred, truth = _blob(rng, shape), _blob(rng, shape)
    assert pred.any() and truth.any()
    got = dice_hd95(pred, truth, spacing)
    want = _reference(pred, truth, spacing)
    assert got[0] == pytest.approx(want[0], abs=1e-6)
    assert got[1] == pytest.approx(want[1], rel=1e-4, abs=1e-4)


def test_identical_masks() -> None:
    mask = np.zeros((10, 10, 5), bool)
    mask[2:6, 3:7, 1:4] = True
    assert dice_hd95(mask, mask, (1.0, 1.0, 2.0)) == (1.0, 0.0)


def test_both_empty_is_perfect() -> None:
    empty = np.zeros((8, 8, 4), bool)
    assert dice_hd95(empty, empty, (1.0, 1.0, 1.0)) == (1.0, 0.0)


@pytest.mark.parametrize("which", ["pred", "truth"])
def test_one_empty_gives_zero_dice_and_the_diagonal(which: str) -> None:
    empty = np.zeros((8, 6, 4), bool)
    full = empty.copy()
    full[2:4, 2:4, 1:3] = True
    pred, truth = (empty, full) if which == "pred" else (full, empty)
    dice, hd = dice_hd95(pred, truth, (1.0, 2.0, 3.0))
    assert dice == 0.0
    assert hd == pytest.approx(math.sqrt(8**2 + 12**2 + 12**2))
    assert not math.isnan(hd)
