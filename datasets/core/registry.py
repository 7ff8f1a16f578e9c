"""One registry pattern for datasets, methods, estimators and backbones (timm-style)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import import_module
from importlib.metadata import entry_points
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError):
    """A registry was asked for a name it does not hold."""


class PluginWarning(UserWarning):
    """An installed plugin (an entry point) failed to load; the registry goes on without it."""


class Registry(Generic[T]):
    """Name -> object map filled by a decorator; built-in modules and entry-point plugins loaded on first lookup.

    >>> METHODS = Registry("method", entry_point_group="ntbench.methods", builtins=("methods.finetune",))
    >>> @METHODS.register("finetune")
    ... class FineTune: ...

    ``builtins`` name the modules whose import registers the built-in entries: they are imported when the registry
    is first asked (``names``, ``get``, ``in``), so importing the package that holds the registry stays light.
    """

    def __init__(self, kind: str, entry_point_group: str | None = None, builtins: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self.builtins = builtins
        self._builtins_loaded = not builtins
        self._items: dict[str, T] = {}
        self._plugins_loaded = entry_point_group is None
        # entry-point name -> "module: ExceptionType: message" of each plugin that failed to load
        self.broken: dict[str, str] = {}

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

    @contextmanager
    def temporarily(self, name: str, obj: T) -> Iterator[T]:
        """Register ``obj`` as ``name`` for the ``with`` block only (tests, notebooks); then it is gone again."""
        self._load_builtins()
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self.register(name)(obj)
        try:
            yield obj
        finally:
            self._items.pop(name, None)

    @contextmanager
    def isolated(self) -> Iterator[None]:
        """Plugins are looked up afresh inside the block, and whatever registers in it is undone at its end."""
        self._load_builtins()  # before saving: a built-in module is imported once, its entries must outlive the block
        saved = dict(self._items), self._plugins_loaded, dict(self.broken)
        self._plugins_loaded, self.broken = self.entry_point_group is None, {}
        try:
            yield
        finally:
            self._items, self._plugins_loaded, self.broken = saved

    def _load_builtins(self) -> None:
        if not self._builtins_loaded:
            self._builtins_loaded = True
            for module in self.builtins:
                import_module(module)  # importing the module runs its @register decorators

    def _load_plugins(self) -> None:
        """Import the built-in modules, then every entry point of the group; a plugin that fails is named in a
        warning and in ``broken``."""
        self._load_builtins()
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.entry_point_group):
            try:
                ep.load()  # importing the module runs its @register decorators
            except Exception as exc:  # noqa: BLE001 - any error of a third-party module: report it, load the rest
                reason = f"{ep.value}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                self.broken[ep.name] = reason
                warnings.warn(
                    f"{self.kind} plugin {ep.name!r} ({self.entry_point_group}) failed to load, left out: {reason}",
                    PluginWarning,
                    stacklevel=3,
                )

    def names(self) -> list[str]:
        """Sorted registered names, plugins included."""
        self._load_plugins()
        return sorted(self._items)

    def get(self, name: str) -> T:
        """The object registered as ``name``; a one-line error lists valid names (and any plugin that failed)."""
        self._load_plugins()
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(self.names())
            broken = "; ".join(f"{ep} ({why})" for ep, why in self.broken.items())
            failed = f"; plugin(s) that failed to load: {broken}" if broken else ""
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid: {valid}{failed}") from None

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._items
