"""TransRate of the source model's per-pixel features."""

from __future__ import annotations

import torch
from torch import Tensor

from methods.estimators.base import FeatureEstimator, class_ids, register_estimator

DISTORTION = 1e-4  # epsilon of the coding rate, tllib's default


def coding_rate(features: Tensor, eps: float = DISTORTION) -> Tensor:
    """R(f, eps) = 1/2 log det(I + f^T f / (n eps)) of features (n, D)."""
    n, d = features.shape
    eye = torch.eye(d, dtype=features.dtype, device=features.device)
    # Huang et al., ICML 2022, "Frustratingly easy transferability estimation": coding rate R(Z, eps), tllib
    return 0.5 * torch.linalg.slogdet(eye + features.T @ features / (n * eps)).logabsdet


@register_estimator("transrate")
class TransRate(FeatureEstimator):
    """TransRate (Huang et al., ICML 2022, "Frustratingly easy transferability estimation"): the coding rate of
    the centred features minus the mean over target classes of each class's coding rate, as tllib's
    ``transrate``."""

    def of_features(self, features: Tensor, labels: Tensor) -> float:
        centred = features - features.mean(0, keepdim=True)
        classes = class_ids(labels)
        # Huang et al. 2022, TransRate: TrR = R(f, eps) - R(f, eps | y), R(f|y) = mean R(f_c) (tllib transrate)
        per_class = sum(coding_rate(centred[labels == c]) for c in classes) / len(classes)
        return (coding_rate(centred) - per_class).item()
