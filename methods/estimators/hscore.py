"""H-score of the source model's per-pixel features."""

from __future__ import annotations

import torch
from torch import Tensor

from methods.estimators.base import FeatureEstimator, class_ids, register_estimator


def class_means(features: Tensor, labels: Tensor) -> Tensor:
    """(n, D): every sample's feature replaced by its class's mean, E[f | y]."""
    g = torch.empty_like(features)
    for c in class_ids(labels):
        rows = labels == c
        g[rows] = features[rows].mean(0)
    return g


def trace_pinv_product(a: Tensor, b: Tensor) -> float:
    """tr(pinv(a) b) for a symmetric positive semi-definite ``a``, singular values below 1e-15 of the largest cut
    (numpy's pinv rcond, as tllib's h_score)."""
    return torch.trace(torch.linalg.pinv(a, rtol=1e-15, hermitian=True) @ b).item()


@register_estimator("hscore")
class HScore(FeatureEstimator):
    """H-score (Bao et al., ICIP 2019, "An information-theoretic approach to transferability in task transfer
    learning"): tr(cov(f)^+ cov(E[f|y])), sample covariances, as tllib's ``h_score``."""

    def of_features(self, features: Tensor, labels: Tensor) -> float:
        # Bao et al. 2019, the H-score: H(f) = tr(cov(f)^-1 cov(E_{P_X|Y}[f(X)|Y])), pseudo-inverse as tllib h_score
        return trace_pinv_product(torch.cov(features.T), torch.cov(class_means(features, labels).T))
