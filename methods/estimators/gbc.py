"""GBC of the source model's per-pixel features."""

from __future__ import annotations

import torch
from torch import Tensor

from methods.estimators.base import FeatureEstimator, class_ids, register_estimator

VARIANCE_FLOOR = 1e-4  # the authors' code (google-research stable_transfer/transferability/gbc.py): no zero variance


@register_estimator("gbc")
class GBC(FeatureEstimator):
    """Gaussian Bhattacharyya Coefficient (Pándy et al., CVPR 2022, "Transferability estimation using
    Bhattacharyya class separability"), diagonal Gaussians: minus the sum over ordered pairs of distinct target
    classes of their Bhattacharyya coefficient. The paper first projects features to 64 dimensions by PCA;
    every backbone here has at most 64 feature channels, so none is applied."""

    def of_features(self, features: Tensor, labels: Tensor) -> float:
        classes = class_ids(labels)
        # Pándy et al. 2022, CVPR, eq. (1): per class c, N(mu_c, diag(sigma_c^2)) from its samples
        mu = torch.stack([features[labels == c].mean(0) for c in classes])
        var = torch.stack([features[labels == c].var(0, correction=0) for c in classes]).clamp_min(VARIANCE_FLOOR)
        mean_var = (var[:, None] + var[None, :]) / 2  # (C, C, D): sigma = (sigma_i + sigma_j) / 2
        # ibid., eq. (2): D_B = 1/8 dmu^T sigma^-1 dmu + 1/2 ln(det sigma / sqrt(det sigma_i det sigma_j))
        distance = ((mu[:, None] - mu[None, :]) ** 2 / mean_var).sum(-1) / 8 + 0.5 * (
            mean_var.log().sum(-1) - 0.5 * (var.log().sum(-1)[:, None] + var.log().sum(-1)[None, :])
        )
        off_diagonal = ~torch.eye(len(classes), dtype=torch.bool, device=features.device)
        # ibid., eq. (3): GBC = -sum_{i != j} BC(c_i, c_j), BC = exp(-D_B)
        return -torch.exp(-distance)[off_diagonal].sum().item()
