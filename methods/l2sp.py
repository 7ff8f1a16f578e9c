"""L2-SP: weight decay towards the starting point (Li, Grandvalet and Davoine, ICML 2018)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.base import HParam, Method, RunContext, Space, register_method
from methods.features import require_source
from methods.losses import base_loss


def split_transferred(
    source: nn.Module, target: nn.Module
) -> tuple[list[tuple[nn.Parameter, torch.Tensor]], list[nn.Parameter]]:
    """Target parameters that start at the source's (same name, shape and value), each with a copy of its
    start w0, and the others (newly initialised, e.g. a head re-initialised for a new class count)."""
    src = dict(source.named_parameters())
    transferred, new = [], []
    for name, p in target.named_parameters():
        s = src.get(name)
        if s is not None and s.shape == p.shape and torch.equal(s.detach().to(p.device), p.detach()):
            transferred.append((p, p.detach().clone()))
        else:
            new.append(p)
    return transferred, new


def squared_norm(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Sum of squares of all entries of ``tensors`` (0 for none)."""
    total = torch.zeros((), device=device)
    for t in tensors:
        total = total + t.pow(2).sum()
    return total


def trainable_without_decay(model: nn.Module, lr: float) -> list[dict[str, Any]]:
    """One group of every trainable parameter, weight decay 0 (an explicit penalty takes its place)."""
    return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr, "weight_decay": 0.0}]


@register_method("l2sp")
class L2SP(Method):
    """Pull transferred weights towards their source values; plain L2 on newly initialised ones."""

    # Defaults alpha = beta = 0.01: L2-SP as run by DELTA's reference code (github.com/lixingjian/DELTA).
    hparams = {
        "alpha": HParam(
            0.01,
            "weight of alpha/2 ||w - w0||^2 over the transferred parameters",
            low=0,
            space=Space("log", 1e-4, 1.0),
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
        self._transferred: list[tuple[nn.Parameter, torch.Tensor]] = []
        self._new: list[nn.Parameter] = []
        self._device = torch.device("cpu")

    def prepare(self, run: RunContext) -> None:
        source_model, target_model, device = run.source_model, run.target_model, run.device
        super().prepare(run)
        self.source_model = require_source(self.name, source_model)
        self._transferred, self._new = split_transferred(self.source_model, target_model)
        self._device = device

    def param_groups(self, target_model: nn.Module, lr: float) -> list[dict[str, Any]]:
        # The penalty replaces weight decay on every parameter (Li et al. 2018, sec. 3).
        return trainable_without_decay(target_model, lr)

    def penalty(self) -> torch.Tensor:
        """alpha/2 ||w_S - w0_S||^2 + beta/2 ||w_new||^2."""
        # Li, Grandvalet and Davoine 2018, sec. 3, the L2-SP penalty Omega(w).
        drift = squared_norm([p - p0 for p, p0 in self._transferred], self._device)
        fresh = squared_norm(list(self._new), self._device)
        return 0.5 * self.params["alpha"] * drift + 0.5 * self.params["beta"] * fresh

    def loss(self, batch: dict[str, torch.Tensor], logits: torch.Tensor, target_model: nn.Module) -> torch.Tensor:
        return base_loss(logits, batch["label"]) + self.penalty()
