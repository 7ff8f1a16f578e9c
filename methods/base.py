"""The method interface: a few hooks through which a strategy sees a fine-tuning run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from benchmarks.core.registry import Registry
from methods.losses import base_loss


class MethodConfigError(ValueError):
    """A method was given an unknown or invalid hyperparameter, or cannot run where it was asked to."""


@dataclass
class RunContext:
    """What the runner knows about one fine-tuning run; a method keeps it as ``self.run`` (docs/design.md §Methods)."""

    source_model: nn.Module | None  # frozen, eval mode; None for methods with init = "random"
    target_model: nn.Module
    train_data: Any  # a datasets.slices.SliceDataset of the target training slices
    device: torch.device
    total_steps: int = 0
    seed: int = 0
    cache_dir: Path | None = None  # where one-off work (e.g. TRM maps) may be cached
    # Ground-truth risk maps (N, H, W) in [0, 1] of the training slices, given when the method asks for them
    # (``needs_risk_maps``); the grid refuses such a method where the dataset has none (docs/design.md §Testbed).
    risk_maps: np.ndarray | None = None
    optimizer: torch.optim.Optimizer | None = None  # set by the training loop once it is built


SPACE_KINDS = ("log", "uniform", "int", "choice")


@dataclass(frozen=True)
class Space:
    """Where tuning searches a hyperparameter: log-uniform, uniform or integer in [low, high], or a choice.

    >>> Space("log", 1e-4, 1e-2); Space("choice", choices=("encoder", "encoder+decoder"))
    """

    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in SPACE_KINDS:
            raise MethodConfigError(f"search space kind {self.kind!r}; valid: {', '.join(SPACE_KINDS)}")
        if self.kind == "choice":
            if not self.choices:
                raise MethodConfigError("search space choice: needs at least one value")
            return
        if self.low is None or self.high is None or isinstance(self.low, bool) or isinstance(self.high, bool):
            raise MethodConfigError(f"search space {self.kind}: needs numeric bounds low and high")
        if not self.low < self.high:
            raise MethodConfigError(f"search space {self.kind}[{self.low}, {self.high}]: low must be below high")
        if self.kind == "log" and self.low <= 0:
            raise MethodConfigError(f"search space log[{self.low}, {self.high}]: bounds must be > 0")
        if self.kind == "int" and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise MethodConfigError(f"search space int[{self.low}, {self.high}]: bounds must be integers")

    def with_bounds(self, low: float, high: float) -> Space:
        """The same kind over other bounds (a suite narrowing a range); validated like any space."""
        if self.kind == "choice":
            raise MethodConfigError("a choice space has no bounds; give its values instead")
        return Space(self.kind, low, high)

    def __str__(self) -> str:
        if self.kind == "choice":
            return "choice{" + ", ".join(map(str, self.choices)) + "}"
        return f"{self.kind}[{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class HParam:
    """A declared hyperparameter: default, one-line help, optional allowed values, search space."""

    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    space: Space | None = None


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
    requires: ClassVar[tuple[str, ...]] = ()  # structure a backbone must declare, e.g. ("encoder_stages",)
    # Hyperparameters added after the method's first release, with the value every earlier cell ran with: a cell
    # key leaves them out at that value, so finished results keep their keys (docs/design.md §Vocabulary).
    key_stable_defaults: ClassVar[dict[str, Any]] = {}

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
        self.run: RunContext | None = None
        self.source_model: nn.Module | None = None

    # --- hooks -----------------------------------------------------------------
    def check(self, model: nn.Module, task: Any) -> None:
        """Raise ``MethodConfigError`` if this method cannot run on ``model``'s backbone for ``task``.

        Called when the grid is built, on a freshly built backbone, before any training. The default
        refuses a backbone lacking a structure attribute named in ``requires``.
        """
        for attr in self.requires:
            if not getattr(model, attr, None):
                raise MethodConfigError(
                    f"method {self.name!r} needs a backbone that declares {attr!r}; {type(model).__name__} does not"
                )

    def needs_risk_maps(self) -> bool:
        """True when ``prepare`` reads ``run.risk_maps`` (the trm oracle control); the grid checks the data has them."""
        return False

    def prepare(self, run: RunContext) -> None:
        """One-off work before fine-tuning (snapshot weights, compute maps, ...); keeps ``run``."""
        self.run = run
        self.source_model = run.source_model

    def param_groups(self, target_model: nn.Module, lr: float) -> list[dict[str, Any]]:
        """What trains and at which learning rate."""
        return [{"params": [p for p in target_model.parameters() if p.requires_grad], "lr": lr}]

    def loss(self, batch: dict[str, torch.Tensor], logits: torch.Tensor, target_model: nn.Module) -> torch.Tensor:
        """Training loss of one batch; default is the shared Dice + CE loss."""
        return base_loss(logits, batch["label"])

    def on_step(self, step: int, target_model: nn.Module) -> None:
        """Called before optimiser step ``step`` (0-based): schedules such as LP-FT."""

    def after_backward(self, step: int, target_model: nn.Module) -> None:
        """Called after ``backward`` and before the optimiser step: gradient surgery or projection."""

    def on_epoch_end(self, epoch: int, target_model: nn.Module) -> None:
        """Called after each pass over the training slices."""

    def result_columns(self) -> dict[str, Any]:
        """Extra per-cell columns for every result row (e.g. transferability scores)."""
        return {}


METHODS: Registry[type[Method]] = Registry("method", entry_point_group="ntbench.methods")
register_method = METHODS.register
