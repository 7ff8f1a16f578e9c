"""Transferability estimators: a registry and one pass of a frozen source model over target slices
(docs/design.md §Transferability estimators).

>>> estimate(source_model, train_slices, ["leep", "logme"])  # {"leep": -0.41, "logme": 0.93}
>>> estimate_maps(source_model, train_slices, ["leep", "nce"], stride=4)  # {"leep": (16, 16) array, ...}

A plugin estimator is one ``Estimator`` subclass registered with ``@register_estimator("name")`` in a module
named by an ``ntbench.estimators`` entry point.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from datasets.slices import SliceDataset, SliceSet

# Importing the built-in estimators registers them.
from methods.estimators import gbc, hscore, leep, logme, nce, shrinkage_hscore, transrate  # noqa: F401
from methods.estimators.base import ESTIMATORS, Estimator, Evidence, FeatureEstimator, register_estimator
from methods.estimators.engine import PER_CLASS, gather

__all__ = [
    "ESTIMATORS",
    "PER_CLASS",
    "Estimator",
    "Evidence",
    "FeatureEstimator",
    "estimate",
    "estimate_maps",
    "map_names",
    "register_estimator",
]


def map_names() -> list[str]:
    """Registered estimators that also give a location map."""
    return [name for name in ESTIMATORS.names() if ESTIMATORS.get(name).map_needs]


def _loader(slices: SliceSet | Dataset, num_classes: int | None, batch_size: int) -> tuple[DataLoader, int]:
    """Un-augmented batches in slice order, and the target class count (the labels' maximum + 1 by default)."""
    if isinstance(slices, SliceDataset):
        slices = slices.slices
    if not isinstance(slices, SliceSet):
        raise TypeError(f"slices must be a SliceSet or SliceDataset, got {type(slices).__name__}")
    if num_classes is None:
        num_classes = int(slices.labels.max()) + 1
    return DataLoader(SliceDataset(slices, augment=False), batch_size=batch_size, shuffle=False), num_classes


def estimate(
    source_model: nn.Module,
    slices: SliceSet | SliceDataset,
    names: Sequence[str],
    *,
    num_classes: int | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    per_class: int = PER_CLASS,
    seed: int = 0,
) -> dict[str, float]:
    """Each named estimator of ``source_model`` (frozen, eval mode, on ``device``) on the target ``slices``.

    One pass gathers what every estimator reads (a second only for LEEP); feature estimators read a sample of
    ``per_class`` pixels per target class drawn with ``seed``. ``num_classes`` defaults to the labels' max + 1.
    """
    estimators = {name: ESTIMATORS.get(name)() for name in names}
    loader, num_classes = _loader(slices, num_classes, batch_size)
    needs = {need for est in estimators.values() for need in est.needs}
    evidence = gather(source_model, loader, needs, num_classes, device, per_class=per_class, seed=seed)
    return {name: est.score(evidence) for name, est in estimators.items()}


def estimate_maps(
    source_model: nn.Module,
    slices: SliceSet | SliceDataset,
    names: Sequence[str],
    *,
    stride: int = 4,
    num_classes: int | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
) -> dict[str, np.ndarray]:
    """Each named estimator's location map (H // stride, W // stride) float64: its value on the pooled pixels
    of every slice at each stride x stride window (Tan et al., ICIP 2023), on the scale of a window's LEEP."""
    estimators = {name: ESTIMATORS.get(name)() for name in names}
    flat = [name for name, est in estimators.items() if not est.map_needs]
    if flat:
        raise ValueError(f"estimator(s) {flat} have no location map (global only); with maps: {', '.join(map_names())}")
    loader, num_classes = _loader(slices, num_classes, batch_size)
    needs = {need for est in estimators.values() for need in est.map_needs}
    evidence = gather(source_model, loader, needs, num_classes, device, stride=stride)
    return {name: est.location_map(evidence).cpu().numpy() for name, est in estimators.items()}
