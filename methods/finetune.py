"""Plain fine-tuning and training from scratch: the two references of every comparison."""

from __future__ import annotations

from typing import Any

from torch import nn

from methods.base import HParam, Method, Space, register_method


@register_method("finetune")
class FineTune(Method):
    """All weights trainable from the source model; head re-initialised if class counts differ."""

    hparams = {
        "encoder_lr_mult": HParam(
            1.0,
            "learning-rate multiplier of the encoder (discriminative lr; 0.1 is common)",
            space=Space("log", 0.01, 1.0),
        ),
    }

    def param_groups(self, target_model: nn.Module, lr: float) -> list[dict[str, Any]]:
        mult = self.params["encoder_lr_mult"]
        if mult == 1.0:
            return super().param_groups(target_model, lr)
        # Discriminative fine-tuning (Howard and Ruder 2018, ULMFiT, sec. 3.2): a lower encoder rate.
        enc = target_model.encoder_parameters()
        enc_ids = {id(p) for p in enc}
        rest = [p for p in target_model.parameters() if id(p) not in enc_ids]
        return [{"params": enc, "lr": lr * mult}, {"params": rest, "lr": lr}]


@register_method("scratch")
class Scratch(Method):
    """The same target training from random init: the reference for negative transfer."""

    init = "random"
