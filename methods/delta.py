"""DELTA: feature-map regularisation towards the source model (Li et al., ICLR 2019).

Only the unweighted feature-map variant is offered: the attention weights of the paper need one
forward pass over the training data per encoder channel (496 channels for ``unet``), too costly here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.base import HParam, Method, RunContext, Space, register_method
from methods.features import FeatureCapture, require, require_source
from methods.l2sp import split_transferred, squared_norm, trainable_without_decay
from methods.losses import base_loss


def feature_distance(target: list[torch.Tensor], source: list[torch.Tensor]) -> torch.Tensor:
    """Sum over stages of 0.5 ||F_t - F_s||^2, summed over batch, channels and positions (no normalisation)."""
    # Li et al. 2019, DELTA behavioural regulariser Omega'(w) = sum_j ||FM_j(w, x) - FM_j(w*, x)||^2 with unit
    # channel weights, as lixingjian/DELTA train.py reg_fea_map computes it: 0.5 * torch.norm(fm_t - fm_s) ** 2.
    return sum(0.5 * (t.float() - s.float()).pow(2).sum() for t, s in zip(target, source, strict=True))


@register_method("delta")
class DELTA(Method):
    """Fine-tuning + alpha * distance of encoder-stage outputs to the frozen source's on the same batch."""

    requires = ("encoder_stages",)
    # Defaults alpha = beta = 0.01: DELTA's reference run.sh (github.com/lixingjian/DELTA), which sets them for
    # --reg_type att_fea_map, whose distance is divided by h*w (docs/baselines.md: ours, fea_map, weighs ~28x more).
    hparams = {
        "alpha": HParam(
            0.01,
            "weight of 0.5 ||FM_t - FM_s||^2 summed over encoder stages, batch, channels and positions",
            low=0,
            space=Space("log", 1e-5, 1e-1),
        ),
        "beta": HParam(
            0.01,
            "weight of beta/2 ||w||^2 over newly initialised parameters (a new head)",
            low=0,
            space=Space("log", 1e-4, 1.0),
        ),
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._target: FeatureCapture | None = None
        self._source: FeatureCapture | None = None
        self._new: list[nn.Parameter] = []
        self._device = torch.device("cpu")

    def prepare(self, run: RunContext) -> None:
        source_model, target_model, device = run.source_model, run.target_model, run.device
        super().prepare(run)
        self.source_model = require_source(self.name, source_model)
        stages = list(target_model.encoder_stages)
        require(
            list(self.source_model.encoder_stages) == stages,
            self.name,
            "source and target models declare different encoder stages",
        )
        for name in stages:
            shapes = [[p.shape for p in m.get_submodule(name).parameters()] for m in (self.source_model, target_model)]
            require(shapes[0] == shapes[1], self.name, f"stage {name!r} differs between source and target models")
        self._target = FeatureCapture(self.name, target_model, stages)
        self._source = FeatureCapture(self.name, self.source_model, stages)
        self._new = split_transferred(self.source_model, target_model)[1]
        self._device = device

    def param_groups(self, target_model: nn.Module, lr: float) -> list[dict[str, Any]]:
        # The regulariser replaces weight decay, as in DELTA's reference code (SGD without weight decay).
        return trainable_without_decay(target_model, lr)

    def penalty(self, image: torch.Tensor) -> torch.Tensor:
        """alpha * feature distance (target features of the last forward pass) + beta/2 ||w_new||^2."""
        target_feats = self._target.take()
        with torch.no_grad():
            self.source_model(image)
        source_feats = self._source.take()
        # Li et al. 2019, DELTA objective: alpha * Omega'(behaviour) + beta * Omega''(new weights, L2).
        return self.params["alpha"] * feature_distance(target_feats, source_feats) + 0.5 * self.params[
            "beta"
        ] * squared_norm(self._new, self._device)

    def loss(self, batch: dict[str, torch.Tensor], logits: torch.Tensor, target_model: nn.Module) -> torch.Tensor:
        return base_loss(logits, batch["label"]) + self.penalty(batch["image"])
