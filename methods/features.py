"""Shared helpers of the baselines: capture named submodule outputs, refuse what a method cannot run with."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from methods.base import MethodConfigError


def require(ok: bool, method: str, what: str) -> None:
    """Raise a one-line ``MethodConfigError`` naming the method when ``ok`` is false."""
    if not ok:
        raise MethodConfigError(f"method {method!r}: {what}")


def require_source(method: str, source_model: nn.Module | None) -> nn.Module:
    """Refuse a run without a source model (init = random); freeze the one given."""
    if source_model is None:
        raise MethodConfigError(f"method {method!r} needs a source model (init='source'); none was given")
    return source_model.eval().requires_grad_(False)


class FeatureCapture:
    """Forward hooks keeping the latest output of each named submodule, in the order of ``names``.

    >>> cap = FeatureCapture(self.name, model, model.encoder_stages)  # the method's name heads its errors
    >>> logits = model(x); feats = cap.take()  # list of tensors, shallow -> deep
    """

    def __init__(self, method: str, model: nn.Module, names: Sequence[str]) -> None:
        self.method, self.names = method, list(names)
        self._outputs: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        for name in self.names:
            try:
                module = model.get_submodule(name)
            except AttributeError:
                raise MethodConfigError(f"method {method!r}: model has no submodule {name!r}") from None
            self._handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name: str) -> Callable[[nn.Module, object, object], None]:
        def hook(module: nn.Module, args: object, output: object) -> None:
            if not isinstance(output, torch.Tensor):
                raise MethodConfigError(
                    f"method {self.method!r}: stage {name!r} returns {type(output).__name__}, not a tensor"
                )
            self._outputs[name] = output

        return hook

    def take(self) -> list[torch.Tensor]:
        """The outputs of the last forward pass (then forgotten, so no activation outlives its step)."""
        missing = [n for n in self.names if n not in self._outputs]
        if missing:
            raise RuntimeError(f"method {self.method!r}: no forward pass reached {missing}")
        out = [self._outputs[n] for n in self.names]
        self._outputs.clear()
        return out

    def remove(self) -> None:
        """Detach the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._outputs.clear()
