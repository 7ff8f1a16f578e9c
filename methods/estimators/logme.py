"""LogME of the source model's per-pixel features."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from methods.estimators.base import FeatureEstimator, class_ids, register_estimator


def _evidence(y: Tensor, f: Tensor, s: Tensor, v: Tensor, tmp: Tensor) -> float:
    """Maximum log evidence per sample of targets y (n,) on features f (n, D), f^T f = v diag(s) v^T,
    tmp = v^T f^T y: the fixed-point iteration of alpha, beta as tllib's ``each_evidence``."""
    n, d = f.shape
    alpha, beta = 1.0, 1.0
    lam = alpha / beta
    # You et al., ICML 2021, LogME, its algorithm: fixed point of alpha, beta (as tllib's each_evidence)
    for _ in range(11):
        gamma = (s / (s + lam)).sum().item()
        m = v @ (tmp * beta / (alpha + beta * s))
        alpha_de = (m * m).sum().item()
        alpha = gamma / alpha_de
        beta_de = ((y - f @ m) ** 2).sum().item()
        beta = (n - gamma) / beta_de
        new_lam = alpha / beta
        if abs(new_lam - lam) / lam < 0.01:
            break
        lam = new_lam
    # ibid., the evidence log p(y | F, alpha, beta) at the fixed point, divided by n (as tllib's each_evidence)
    evidence = (
        d / 2 * math.log(alpha)
        + n / 2 * math.log(beta)
        - 0.5 * torch.log(alpha + beta * s).sum().item()
        - beta / 2 * beta_de
        - alpha / 2 * alpha_de
        - n / 2 * math.log(2 * math.pi)
    )
    return evidence / n


@register_estimator("logme")
class LogME(FeatureEstimator):
    """LogME (You et al., ICML 2021, "LogME: practical assessment of pre-trained models for transfer learning"):
    the mean over target classes of the maximum evidence of a Bayesian linear model from the features to the
    class's one-hot column, as tllib's ``log_maximum_evidence``."""

    def of_features(self, features: Tensor, labels: Tensor) -> float:
        s, v = torch.linalg.eigh(features.T @ features)  # tllib takes the SVD of this symmetric matrix
        s = s.clamp_min(0)
        scores = []
        for c in class_ids(labels):
            y = (labels == c).to(features.dtype)
            scores.append(_evidence(y, features, s, v, v.T @ (features.T @ y)))
        return sum(scores) / len(scores)
