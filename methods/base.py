"""The method interface: a few hooks through which a strategy sees a fine-tuning run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from datasets.registry import Registry
from methods.losses import base_loss


@dataclass(frozen=True)
class HParam:
    """A declared hyperparameter: default, one-line help, optional allowed values."""

    default: Any
    help: str
    choices: tuple[Any, ...] | None = None


class MethodConfigError(ValueError):
    """A method was given an unknown or invalid hyperparameter."""


def _coerce(method: str, key: str, value: Any, default: Any) -> Any:
    """Convert a CLI/YAML value to the type of the declared default (bool, int, float, str)."""
    kind = type(default)
    if default is None or isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if kind is bool and isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind in (int, float, str) and not isinstance(value, bool):
        try:
            converted = kind(value)
            if kind is not int or converted == float(value):
                return converted
        except (TypeError, ValueError):
            pass
    raise MethodConfigError(f"method {method!r}: {key}={value!r} is not a {kind.__name__}")


class Method:
    """Base class of a negative-transfer mitigation strategy.

    Subclasses declare ``hparams`` and override the hooks they need; the default
    hooks are plain fine-tuning. ``init`` says how the target model starts:
    ``"source"`` (transferred weights, head re-initialised if the class count
    differs) or ``"random"``.
    """

    name: ClassVar[str] = ""
    hparams: ClassVar[dict[str, HParam]] = {}
    init: ClassVar[str] = "source"

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.hparams))
        if unknown:
            valid = ", ".join(self.hparams) or "none"
            raise MethodConfigError(f"method {self.name!r}: unknown hyperparameter(s) {unknown}; valid: {valid}")
        self.params: dict[str, Any] = {}
        for key, spec in self.hparams.items():
            value = _coerce(self.name, key, params.get(key, spec.default), spec.default)
            if spec.choices is not None and value not in spec.choices:
                raise MethodConfigError(f"method {self.name!r}: {key}={value!r} not in {list(spec.choices)}")
            self.params[key] = value
        self.total_steps = 0  # set by the runner before prepare()
        self.source_model: nn.Module | None = None

    # --- hooks -----------------------------------------------------------------
    def prepare(
        self, source_model: nn.Module | None, target_model: nn.Module, train_data: Any, device: torch.device
    ) -> None:
        """One-off work before fine-tuning (snapshot weights, compute maps, ...)."""
        self.source_model = source_model

    def param_groups(self, target_model: nn.Module, lr: float) -> list[dict[str, Any]]:
        """What trains and at which learning rate."""
        return [{"params": [p for p in target_model.parameters() if p.requires_grad], "lr": lr}]

    def loss(self, batch: dict[str, torch.Tensor], logits: torch.Tensor, target_model: nn.Module) -> torch.Tensor:
        """Training loss of one batch; default is the shared Dice + CE loss."""
        return base_loss(logits, batch["label"])

    def on_step(self, step: int, target_model: nn.Module) -> None:
        """Called before optimiser step ``step`` (0-based): schedules such as LP-FT."""

    def on_epoch_end(self, epoch: int, target_model: nn.Module) -> None:
        """Called after each pass over the training slices."""

    def result_columns(self) -> dict[str, Any]:
        """Extra per-cell columns for every result row (e.g. transferability scores)."""
        return {}


METHODS: Registry[type[Method]] = Registry("method", entry_point_group="ntbench.methods")
register_method = METHODS.register
