"""LP-FT: linear probing, then full fine-tuning (Kumar et al., ICLR 2022)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.base import HParam, Method, register_method
from methods.features import require
from methods.freeze import norm_modules, scope_modules, set_frozen


@register_method("lp-ft")
class LPFT(Method):
    """Head only (body frozen, its norm statistics fixed) for a share of the steps, then everything trains.

    The optimiser holds every parameter from the start; frozen ones get no gradient, which Adam and
    SGD skip, so their optimiser state starts at the switch.
    """

    hparams = {
        "probe_fraction": HParam(0.5, "share of the target steps that train the head only (0 = finetune)"),
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        fraction = self.params["probe_fraction"]
        require(0.0 <= fraction <= 1.0, self.name, f"probe_fraction={fraction} must lie in [0, 1]")
        self.switch_step = 0
        self._body: list[nn.Module] = []
        self._norms: list[nn.Module] = []
        self._probing = False

    def prepare(
        self, source_model: nn.Module | None, target_model: nn.Module, train_data: Any, device: torch.device
    ) -> None:
        super().prepare(source_model, target_model, train_data, device)
        require(self.total_steps >= 1, self.name, f"total_steps={self.total_steps}: set it before prepare()")
        # Kumar et al. 2022 (arXiv 2202.10054), two-step LP-FT: probe for round(fraction * steps) steps.
        self.switch_step = round(self.params["probe_fraction"] * self.total_steps)
        self._body = scope_modules(self.name, target_model, "encoder+decoder")
        self._norms = norm_modules(self._body)
        self._probing = self.switch_step > 0
        set_frozen(self._body, frozen=self._probing, training=target_model.training)

    def param_groups(self, target_model: nn.Module, lr: float) -> list[dict[str, Any]]:
        return [{"params": list(target_model.parameters()), "lr": lr}]

    def on_step(self, step: int, target_model: nn.Module) -> None:
        if self._probing and step >= self.switch_step:
            self._probing = False
            set_frozen(self._body, frozen=False, training=target_model.training)
        elif self._probing:
            for m in self._norms:  # target_model.train() would resume their statistics
                m.eval()
