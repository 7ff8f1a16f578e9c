"""BSS: Batch Spectral Shrinkage (Chen, Wang, Fu, Long and Wang, NeurIPS 2019)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.base import HParam, Method, RunContext, Space, register_method
from methods.features import FeatureCapture
from methods.losses import base_loss


def bss_penalty(features: torch.Tensor, k: int) -> torch.Tensor:
    """Sum of the k smallest squared singular values of the (B, C) feature matrix, whatever min(B, C) is.

    As in the reference (thuml tllib ``BatchSpectralShrinkage``), a batch with min(B, C) <= k is penalised
    too: all its min(B, C) singular values (the reference's index wraps around and counts some twice).
    """
    # Chen et al. 2019, BSS regulariser: L_bss(F) = sum_{i=1..k} sigma_{-i}(F)^2 (sigma_{-i}: i-th smallest).
    sigma = torch.linalg.svdvals(features.float())  # descending
    return sigma[-k:].pow(2).sum()


@register_method("bss")
class BSS(Method):
    """Fine-tuning + eta * L_bss on the globally average-pooled bottleneck features of each batch."""

    requires = ("encoder_stages",)
    # Defaults k = 1, eta = 0.001: Chen et al. 2019, experiments (thuml Transfer-Learning-Library bss.py).
    hparams = {
        "k": HParam(1, "number of smallest singular values penalised", low=1, space=Space("int", 1, 4)),
        "eta": HParam(0.001, "weight of the spectral-shrinkage penalty", low=0, space=Space("log", 1e-4, 1e-1)),
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._capture: FeatureCapture | None = None

    def prepare(self, run: RunContext) -> None:
        target_model = run.target_model
        super().prepare(run)
        self._capture = FeatureCapture(self.name, target_model, target_model.encoder_stages[-1:])

    def penalty(self) -> torch.Tensor:
        """eta * L_bss of the bottleneck features of the last forward pass."""
        (bottleneck,) = self._capture.take()
        pooled = bottleneck.flatten(2).mean(-1)  # global average pooling -> (B, C)
        return self.params["eta"] * bss_penalty(pooled, self.params["k"])

    def loss(self, batch: dict[str, torch.Tensor], logits: torch.Tensor, target_model: nn.Module) -> torch.Tensor:
        return base_loss(logits, batch["label"]) + self.penalty()
