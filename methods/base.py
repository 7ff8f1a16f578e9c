"""The method interface: a few hooks through which a strategy sees a fine-tuning run.

Importing it loads no torch (the hooks receive torch objects; the shared loss is imported where it is used), so
``--list-methods`` and a plugin's declarations are read without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from datasets.core.registry import Registry

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn


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
    """A declared hyperparameter: default, one-line help, the values it allows, and where tuning searches it.

    Allowed values are ``choices``, or a range from ``low`` to ``high`` (inclusive; ``low_open``: the low bound
    excluded; a missing bound is unbounded); the base class refuses anything else in one message format. The
    search space derives from them (the choices, or a bounded range: ``int`` for an integer default, else
    ``uniform``) unless ``space`` gives one (log scale, or narrower), which must lie inside them.

    >>> HParam(0.01, "weight of the penalty", low=0, space=Space("log", 1e-4, 1.0))
    >>> HParam("encoder", "part kept frozen", choices=("encoder", "encoder+decoder"))
    """

    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    space: Space | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def __post_init__(self) -> None:
        if self.space is None:
            object.__setattr__(self, "space", self._derived_space())
        if not self.admits(self.default):
            raise MethodConfigError(f"default {self.default!r} not in {self.allowed()}")
        space = self.space
        ends = () if space is None else space.choices if space.kind == "choice" else (space.low, space.high)
        outside = [v for v in ends if not self.admits(v)]
        if outside:
            raise MethodConfigError(f"search space {space} reaches {outside[0]!r}, not in {self.allowed()}")

    def _derived_space(self) -> Space | None:
        if self.choices is not None:
            return Space("choice", choices=tuple(self.choices))
        if self.low is None or self.high is None:
            return None
        integer = isinstance(self.default, int) and not isinstance(self.default, bool)
        return Space("int" if integer else "uniform", self.low, self.high)

    def admits(self, value: Any) -> bool:
        """Whether ``value`` (already of the declared type) is among the choices and inside the range."""
        if self.choices is not None and value not in self.choices:
            return False
        if self.low is not None and not (value > self.low if self.low_open else value >= self.low):
            return False
        return self.high is None or value <= self.high

    def allowed(self) -> str:
        """The allowed values as text: ``['a', 'b']`` or an interval such as ``[0, inf)``, ``(0, 1]``."""
        if self.choices is not None:
            return str(list(self.choices))
        if self.low is None and self.high is None:
            return "any value"
        low = "(-inf" if self.low is None else f"{'(' if self.low_open else '['}{self.low:g}"
        return f"{low}, {'inf)' if self.high is None else f'{self.high:g}]'}"


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

    name: ClassVar[str] = ""  # set by the registry: the name the method is registered under
    hparams: ClassVar[dict[str, HParam]] = {}
    init: ClassVar[str] = "source"
    # Structure a backbone must declare, e.g. ("encoder_stages",); ``check`` skips a cell whose backbone lacks it and
    # ``prepare`` refuses such a model. An instance may narrow it from its hyperparameters (``freeze``'s scope).
    requires: tuple[str, ...] = ()
    # Bumped (1, 2, ...) whenever the method's results change for the same inputs (its maths, a default's meaning):
    # cell keys hash it from 2 on, so cells computed by an older version are never reused (docs/design.md §Vocabulary).
    version: ClassVar[int] = 1
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
            if not spec.admits(value):
                raise MethodConfigError(f"method {self.name!r}: {key}={value!r} not in {spec.allowed()}")
            self.params[key] = value
        self.run: RunContext | None = None
        self.source_model: nn.Module | None = None

    def unmet_requirement(self, model: nn.Module) -> str | None:
        """The one message for a model lacking a structure attribute named in ``requires``; None if it has them all."""
        for attr in self.requires:
            if not getattr(model, attr, None):
                return f"method {self.name!r} needs a backbone that declares {attr!r}; {type(model).__name__} does not"
        return None

    # --- hooks -----------------------------------------------------------------
    def check(self, model: nn.Module, task: Any) -> str | None:
        """Why this method cannot serve ``model``'s backbone for ``task``, or None when it can.

        Called on a freshly built backbone before the cell trains anything; a reason skips that cell (a
        ``skipped`` row with the reason), the rest of the grid runs. The default: ``unmet_requirement``.
        """
        return self.unmet_requirement(model)

    def needs_risk_maps(self) -> bool:
        """True when ``prepare`` reads ``run.risk_maps`` (the trm oracle control); the grid checks the data has them."""
        return False

    def prepare(self, run: RunContext) -> None:
        """One-off work before fine-tuning (snapshot weights, compute maps, ...); keeps ``run``.

        Refuses (``MethodConfigError``) a source or target model lacking the structure in ``requires``.
        """
        for model in (run.target_model, run.source_model):
            reason = None if model is None else self.unmet_requirement(model)
            if reason:
                raise MethodConfigError(reason)
        self.run = run
        self.source_model = run.source_model

    def param_groups(self, target_model: nn.Module, lr: float) -> list[dict[str, Any]]:
        """What trains and at which learning rate."""
        return [{"params": [p for p in target_model.parameters() if p.requires_grad], "lr": lr}]

    def loss(self, batch: dict[str, torch.Tensor], logits: torch.Tensor, target_model: nn.Module) -> torch.Tensor:
        """Training loss of one batch; default is the shared Dice + CE loss."""
        from methods.losses import base_loss  # MONAI: loaded with the first training step, not with the interface

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


# The built-in strategies' modules, imported on the registry's first lookup (``methods/__init__`` loads none).
BUILTIN_METHODS = tuple(
    f"methods.{m}" for m in ("bss", "class_weighted", "delta", "finetune", "freeze", "l2sp", "lpft", "lwf", "trm")
)
METHODS: Registry[type[Method]] = Registry("method", entry_point_group="ntbench.methods", builtins=BUILTIN_METHODS)
register_method = METHODS.register
