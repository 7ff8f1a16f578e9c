"""Freezing transferred layers: the frozen part keeps its source weights and normalisation statistics."""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from methods.base import HParam, Method, RunContext, register_method

SCOPE_STRUCTURE = {"encoder": "encoder", "encoder+decoder": "body"}  # what a backbone declares for each scope


def norm_modules(roots: list[nn.Module]) -> list[nn.Module]:
    """BatchNorm / InstanceNorm modules (those that can hold running statistics) under ``roots``."""
    return [m for root in roots for m in root.modules() if isinstance(m, _NormBase)]


def scope_modules(model: nn.Module, scope: str) -> list[nn.Module]:
    """The modules a scope names: the encoder stages, or the whole body (encoder + decoder)."""
    return [model.get_submodule(n) for n in model.encoder] if scope == "encoder" else [model.body]


def set_frozen(roots: list[nn.Module], frozen: bool, training: bool) -> None:
    """Freeze (no gradients, normalisation layers in eval mode) or release the modules ``roots``."""
    for root in roots:
        root.requires_grad_(not frozen)
    for m in norm_modules(roots):
        m.train(training and not frozen)


@register_method("freeze")
class Freeze(Method):
    """Keep `scope` at its source weights and norm statistics (out of the optimiser); train the rest."""

    hparams = {
        "scope": HParam(
            "encoder",
            "part kept at its source weights and statistics (encoder+decoder: head only)",
            choices=tuple(SCOPE_STRUCTURE),
        ),
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.requires = (SCOPE_STRUCTURE[self.params["scope"]],)
        self._norms: list[nn.Module] = []

    def prepare(self, run: RunContext) -> None:
        target_model = run.target_model
        super().prepare(run)
        roots = scope_modules(target_model, self.params["scope"])
        set_frozen(roots, frozen=True, training=target_model.training)
        self._norms = norm_modules(roots)

    def on_step(self, step: int, target_model: nn.Module) -> None:
        for m in self._norms:  # target_model.train() would resume updating their running statistics
            m.eval()
