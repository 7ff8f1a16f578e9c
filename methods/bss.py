"""BSS: Batch Spectral Shrinkage (Chen, Wang, Fu, Long and Wang, NeurIPS 2019)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.base import HParam, Method, register_method
from methods.features import FeatureCapture, require, require_attr
from methods.losses import base_loss


def bss_penalty(features: torch.Tensor, k: int) -> torch.Tensor:
    """Sum of the k smallest squared singular values of the (B, C) feature matrix; 0 when min(B, C) <= k.

    With min(B, C) <= k every singular value would be shrunk, i.e. the features themselves rather than
    their spectral tail, so such a batch (e.g. a last batch of one slice) carries no penalty.
    """
    # Chen et al. 2019, BSS regulariser: L_bss(F) = sum_{i=1..k} sigma_{-i}(F)^2 (sigma_{-i}: i-th smallest).
    sigma = torch.linalg.svdvals(features.float())  # descending
    if sigma.numel() <= k:
        return sigma.new_zeros(())
    return sigma[-k:].pow(2).sum()


@register_method("bss")
class BSS(Method):
    """Fine-tuning + eta * L_bss on the globally average-pooled bottleneck features of each batch."""

    hparams = {
        "k": HParam(1, "number of smallest singular values penalised"),
        "eta": HParam(0.001, "weight of the spectral-shrinkage penalty"),
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        # Defaults k = 1, eta = 0.001: Chen et al. 2019, experiments (thuml Transfer-Learning-Library bss.py).
        k, eta = self.params["k"], self.params["eta"]
        require(isinstance(k, int) and k >= 1, self.name, f"k={k!r} must be an integer >= 1")
        require(eta >= 0, self.name, f"eta={eta} must be >= 0")
        self._capture: FeatureCapture | None = None

    def prepare(
        self, source_model: nn.Module | None, target_model: nn.Module, train_data: Any, device: torch.device
    ) -> None:
        super().prepare(source_model, target_model, train_data, device)
        require_attr(self.name, target_model, "encoder_stages")
        self._capture = FeatureCapture(self.name, target_model, target_model.encoder_stages[-1:])

    def penalty(self) -> torch.Tensor:
        """eta * L_bss of the bottleneck features of the last forward pass."""
        (bottleneck,) = self._capture.take()
        pooled = bottleneck.flatten(2).mean(-1)  # global average pooling -> (B, C)
        return self.params["eta"] * bss_penalty(pooled, self.params["k"])

    def loss(self, batch: dict[str, torch.Tensor], logits: torch.Tensor, target_model: nn.Module) -> torch.Tensor:
        return base_loss(logits, batch["label"]) + self.penalty()
