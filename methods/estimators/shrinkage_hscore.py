"""H-score with a Ledoit-Wolf shrunk feature covariance."""

from __future__ import annotations

import torch
from torch import Tensor

from methods.estimators.base import FeatureEstimator, register_estimator
from methods.estimators.hscore import class_means, trace_pinv_product


def ledoit_wolf(features: Tensor) -> tuple[Tensor, float]:
    """(shrunk covariance (D, D), shrinkage) of centred features (n, D): (1 - a) S + a tr(S)/D I, S = f^T f / n."""
    n, d = features.shape
    cov = features.T @ features / n
    if d == 1:  # one feature: every shrinkage gives the same estimate
        return cov, 0.0
    mu = torch.trace(cov) / d
    # Ledoit & Wolf 2004, J. Multivariate Anal. 88, "A well-conditioned estimator for large-dimensional covariance
    # matrices": sample estimates of the optimal shrinkage b^2 / d^2, in scikit-learn's form (ledoit_wolf_shrinkage)
    squares = features**2
    beta = ((squares.T @ squares).sum() / n - (cov**2).sum()) / (d * n)
    delta = ((cov**2).sum() - 2 * mu * torch.diagonal(cov).sum() + d * mu**2) / d
    beta = torch.minimum(beta, delta)
    shrinkage = 0.0 if beta.item() == 0 else (beta / delta).item()
    return (1 - shrinkage) * cov + shrinkage * mu * torch.eye(d, dtype=cov.dtype, device=cov.device), shrinkage


@register_estimator("hscore-shrinkage")
class ShrinkageHScore(FeatureEstimator):
    """Shrinkage-regularised H-score (Ibrahim, Ponomareva & Mazumder 2022, "Newer is not always better:
    rethinking transferability metrics, their peculiarities, stability and performance"): the H-score with
    the Ledoit-Wolf covariance of the centred features, as tllib's ``regularized_h_score``."""

    def of_features(self, features: Tensor, labels: Tensor) -> float:
        centred = features - features.mean(0, keepdim=True)
        cov_alpha, alpha = ledoit_wolf(centred)
        # Ibrahim et al. 2022, shrinkage H-score: tr(cov_alpha(f)^-1 (1 - alpha) cov(E[f|y])) (tllib)
        return trace_pinv_product(cov_alpha, (1 - alpha) * torch.cov(class_means(centred, labels).T))
