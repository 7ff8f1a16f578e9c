"""One registry pattern for datasets, methods and backbones (timm-style)."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError):
    """A registry was asked for a name it does not hold."""


class Registry(Generic[T]):
    """Name -> object map filled by a decorator; optional entry-point plugins.

    >>> METHODS = Registry("method", entry_point_group="ntbench.methods")
    >>> @METHODS.register("finetune")
    ... class FineTune: ...
    """

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
        self._plugins_loaded = entry_point_group is None

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` (names are unique)."""

        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            if isinstance(obj, type):
                obj.name = name  # type: ignore[attr-defined]
            return obj

        return deco

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.entry_point_group):
            ep.load()  # importing the module runs its @register decorators

    def names(self) -> list[str]:
        """Sorted registered names, plugins included."""
        self._load_plugins()
        return sorted(self._items)

    def get(self, name: str) -> T:
        """The object registered as ``name``; a one-line error lists valid names."""
        self._load_plugins()
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(self.names())
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid: {valid}") from None

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._items
