"""LwF: learning without forgetting, adapted to segmentation (Li and Hoiem, TPAMI 2017)."""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from methods.base import HParam, Method, RunContext, Space, register_method
from methods.features import FeatureCapture, require, require_source
from methods.freeze import norm_modules, set_frozen
from methods.losses import base_loss


def distillation(source_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(z_s / T) || softmax(z / T)) over the class axis 1, mean over pixels (each pixel a sample).

    LwF's L_old is the cross-entropy to the soft targets; it differs from this KL by the entropy of the
    targets, a constant, so value differences and gradients agree. No T^2 factor, as in LwF and tllib.
    """
    # Li and Hoiem 2017, sec. 3, L_old with y'_o = softmax(y_o / T); tllib KnowledgeDistillationLoss (batchmean KL).
    log_p = F.log_softmax(source_logits.float() / temperature, dim=1)
    log_q = F.log_softmax(student_logits.float() / temperature, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(1).mean()


@register_method("lwf")
class LwF(Method):
    """Warm-up of the target head alone, then fine-tuning + distillation into an auxiliary source head.

    The auxiliary head (a trained copy of the source head) reads the target body's output, captured by a
    forward hook, so the body runs once per step; the frozen source model runs once more without gradients.
    """

    requires = ("body", "head")
    # Defaults lambda_o = 1, T = 2: Li and Hoiem 2017, sec. 3 (following Hinton et al. 2015).
    hparams = {
        "lambda": HParam(1.0, "weight of the distillation term (lambda_o)", low=0, space=Space("log", 0.1, 10.0)),
        "temperature": HParam(
            2.0, "softmax temperature T of the distillation", low=0, low_open=True, space=Space("uniform", 1.0, 4.0)
        ),
        "warmup_fraction": HParam(
            0.1,
            "share of the target steps that train the target head only (body and source head frozen)",
            low=0,
            high=1,
            space=Space("uniform", 0.0, 0.5),
        ),
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.aux_head: nn.Module | None = None
        self._body: FeatureCapture | None = None
        self._body_modules: list[nn.Module] = []
        self.warmup_steps = 0
        self._warming = False

    def prepare(self, run: RunContext) -> None:
        source_model, target_model, device = run.source_model, run.target_model, run.device
        super().prepare(run)
        self.source_model = require_source(self.name, source_model)
        classes = getattr(self.source_model.head, "out_channels", 0)
        require(classes >= 2, self.name, f"the source head has {classes} output channels; distillation needs >= 2")
        self.aux_head = copy.deepcopy(self.source_model.head).to(device).requires_grad_(True)
        self._body = FeatureCapture(self.name, target_model, ["body"])
        # Li and Hoiem 2017, sec. 3: "we first freeze theta_s and theta_o and train theta_n (warm-up step)".
        self.warmup_steps = round(self.params["warmup_fraction"] * self.run.total_steps)
        self._body_modules = [target_model.body]
        self._warming = self.warmup_steps > 0
        if self._warming:
            self._freeze(True, target_model.training)

    def _freeze(self, frozen: bool, training: bool) -> None:
        set_frozen(self._body_modules, frozen=frozen, training=training)
        self.aux_head.requires_grad_(not frozen)

    def param_groups(self, target_model: nn.Module, lr: float) -> list[dict[str, Any]]:
        # Every parameter from the start: frozen ones get no gradient during the warm-up, which Adam/SGD skip.
        return [
            {"params": list(target_model.parameters()), "lr": lr},
            {"params": list(self.aux_head.parameters()), "lr": lr},
        ]

    def on_step(self, step: int, target_model: nn.Module) -> None:
        if self._warming and step >= self.warmup_steps:
            self._warming = False
            self._freeze(False, target_model.training)
        elif self._warming:
            for m in norm_modules(self._body_modules):  # target_model.train() would resume their statistics
                m.eval()

    def penalty(self, image: torch.Tensor) -> torch.Tensor:
        """lambda * distillation of the source logits into the auxiliary head (last forward's body output)."""
        (features,) = self._body.take()
        with torch.no_grad():
            source_logits = self.source_model(image)
        # Li and Hoiem 2017, sec. 3: L_new + lambda_o * L_old(Y_o, Y_hat_o), L_old a distillation loss.
        return self.params["lambda"] * distillation(source_logits, self.aux_head(features), self.params["temperature"])

    def loss(self, batch: dict[str, torch.Tensor], logits: torch.Tensor, target_model: nn.Module) -> torch.Tensor:
        if self._warming:  # theta_s and theta_o frozen: L_old is a constant, only L_new trains theta_n
            self._body.take()
            return base_loss(logits, batch["label"])
        return base_loss(logits, batch["label"]) + self.penalty(batch["image"])
