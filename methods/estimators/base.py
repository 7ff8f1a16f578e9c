"""The estimator interface and registry (docs/design.md §Transferability estimators)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from datasets.core.registry import Registry

# What one pass of the frozen source model over the target training slices can gather (methods.estimators.engine).
# Global: the LEEP joint and its second-pass sum of log e, the hard-prediction counts, a feature sample;
# per stride x stride window (location maps): the same joint, log-e sums and counts.
EVIDENCE = ("joint", "log_e", "counts", "features", "window_joint", "window_log_e", "window_counts")


@dataclass
class Evidence:
    """Statistics of the target training slices under the frozen source model; only those asked for are set."""

    num_classes: int
    pixels: int = 0  # pixels seen (every slice's H x W)
    joint: Tensor | None = None  # (C, K) float64: sum over pixels labelled y of softmax probability of z
    log_e: Tensor | None = None  # () float64: sum over pixels of log max(e, EPS), e from the joint
    counts: Tensor | None = None  # (C, K) int64: pixels labelled y whose argmax source class is z
    features: Tensor | None = None  # (n, D) float64: class-balanced sample of per-pixel features before the head
    feature_labels: Tensor | None = None  # (n,) int64: the sample's target classes
    window_pixels: int = 0  # pixels per window: slices x stride x stride
    window_joint: Tensor | None = None  # (h, w, C, K) float64
    window_log_e: Tensor | None = None  # (h, w) float64
    window_counts: Tensor | None = None  # (h, w, C, K) int64


class Estimator:
    """A transferability estimator: a score of a frozen source model on target data, higher = transfers better.

    A subclass names its paper in its docstring, declares the ``Evidence`` it reads (``needs``, and
    ``map_needs`` when it also has a location map: one value per stride x stride window, pooled over
    every slice) and computes from it. Register it with ``@register_estimator("name")``.
    """

    name: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ()
    map_needs: ClassVar[tuple[str, ...]] = ()  # () = global only

    def score(self, evidence: Evidence) -> float:
        """The estimator's value over every target training pixel (or the feature sample)."""
        raise NotImplementedError

    def location_map(self, evidence: Evidence) -> Tensor:
        """(H // stride, W // stride) float64: the estimator on each window's pooled pixels, on the scale
        of a window's LEEP (mean log of a probability), so ``exp`` of it is TRM's e (docs/design.md §TRM)."""
        raise NotImplementedError(f"estimator {self.name!r} has no location map")


class FeatureEstimator(Estimator):
    """An estimator of the per-pixel features before the source model's head, from the class-balanced sample."""

    needs = ("features",)

    def score(self, evidence: Evidence) -> float:
        if evidence.features is None or evidence.feature_labels is None:
            raise ValueError(f"estimator {self.name!r} needs the feature sample")
        return self.of_features(evidence.features, evidence.feature_labels)

    def of_features(self, features: Tensor, labels: Tensor) -> float:
        """The score of features (n, D) float64 with target classes (n,) int64 (classification-shaped)."""
        raise NotImplementedError


ESTIMATORS: Registry[type[Estimator]] = Registry("estimator", entry_point_group="ntbench.estimators")
register_estimator = ESTIMATORS.register


def class_ids(labels: Tensor) -> list[int]:
    """The classes present in ``labels``, ascending (one host sync)."""
    return [int(c) for c in labels.unique().tolist()]
