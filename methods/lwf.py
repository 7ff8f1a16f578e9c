"""LwF: learning without forgetting, adapted to segmentation (Li and Hoiem, TPAMI 2017)."""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from methods.base import HParam, Method, register_method
from methods.features import FeatureCapture, require, require_attr, require_source
from methods.losses import base_loss


def distillation(source_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(z_s / T) || softmax(z / T)) over the class axis 1, mean over pixels.

    LwF's L_old is the cross-entropy to the soft targets; it differs from this KL by the entropy of the
    targets, a constant, so the gradients agree up to the T^2 factor of Hinton et al.
    """
    # Hinton, Vinyals and Dean 2015, sec. 2: soft targets at temperature T, gradients rescaled by T^2.
    log_p = F.log_softmax(source_logits.float() / temperature, dim=1)
    log_q = F.log_softmax(student_logits.float() / temperature, dim=1)
    return temperature**2 * (log_p.exp() * (log_p - log_q)).sum(1).mean()


@register_method("lwf")
class LwF(Method):
    """Fine-tuning + distillation of the frozen source's predictions into an auxiliary source head.

    The auxiliary head (a trained copy of the source head) reads the target body's output, captured by a
    forward hook, so the body runs once per step; the frozen source model runs once more without gradients.
    """

    hparams = {
        "lambda": HParam(1.0, "weight of the distillation term (lambda_o)"),
        "temperature": HParam(2.0, "softmax temperature T of the distillation"),
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        # Defaults lambda_o = 1, T = 2: Li and Hoiem 2017, sec. 3 (following Hinton et al. 2015).
        lam, temperature = self.params["lambda"], self.params["temperature"]
        require(lam >= 0, self.name, f"lambda={lam} must be >= 0")
        require(temperature > 0, self.name, f"temperature={temperature} must be > 0")
        self.aux_head: nn.Module | None = None
        self._body: FeatureCapture | None = None

    def prepare(
        self, source_model: nn.Module | None, target_model: nn.Module, train_data: Any, device: torch.device
    ) -> None:
        self.source_model = require_source(self.name, source_model)
        for model in (self.source_model, target_model):
            require_attr(self.name, model, "body")
            require_attr(self.name, model, "head")
        classes = getattr(self.source_model.head, "out_channels", 0)
        require(classes >= 2, self.name, f"the source head has {classes} output channels; distillation needs >= 2")
        self.aux_head = copy.deepcopy(self.source_model.head).to(device).requires_grad_(True)
        self._body = FeatureCapture(self.name, target_model, ["body"])

    def param_groups(self, target_model: nn.Module, lr: float) -> list[dict[str, Any]]:
        return super().param_groups(target_model, lr) + [{"params": list(self.aux_head.parameters()), "lr": lr}]

    def penalty(self, image: torch.Tensor) -> torch.Tensor:
        """lambda * distillation of the source logits into the auxiliary head (last forward's body output)."""
        (features,) = self._body.take()
        with torch.no_grad():
            source_logits = self.source_model(image)
        # Li and Hoiem 2017, sec. 3: L_new + lambda_o * L_old(Y_o, Y_hat_o), L_old a distillation loss.
        return self.params["lambda"] * distillation(source_logits, self.aux_head(features), self.params["temperature"])

    def loss(self, batch: dict[str, torch.Tensor], logits: torch.Tensor, target_model: nn.Module) -> torch.Tensor:
        return base_loss(logits, batch["label"]) + self.penalty(batch["image"])
