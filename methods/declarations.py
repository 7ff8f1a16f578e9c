"""What ``--list-methods`` shows of each method, read without torch: its summary line and hyperparameters.

A built-in method's module imports torch (and MONAI) to train, which takes seconds; its class declares what the
listing needs in plain ``HParam``/``Space`` calls on literals and the module's constants. So the built-in modules'
declarations are read from their source (``ast``), never imported; ``tests/methods/test_declarations.py`` checks
that this gives every registered built-in exactly as importing it does. A plugin (entry point ``ntbench.methods``)
is imported: its declarations are whatever its module makes them.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from importlib.metadata import entry_points
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from methods.base import BUILTIN_METHODS, METHODS, HParam, Method, Space

_CALLS = {"HParam": HParam, "Space": Space, "tuple": tuple}  # what a declaration may call


@dataclass(frozen=True)
class Declaration:
    """A method as ``--list-methods`` shows it: the first line of its docstring and its hyperparameters."""

    summary: str
    hparams: dict[str, HParam]

    @classmethod
    def of(cls, method: type[Method]) -> Declaration:
        """The declaration of an imported method class."""
        lines = (method.__doc__ or "").strip().splitlines()
        return cls(lines[0] if lines else "", dict(method.hparams))


def declarations() -> dict[str, Declaration]:
    """Every registered method's declaration by name: the built-ins read from source, plugins imported."""
    found: dict[str, Declaration] = {}
    for module in BUILTIN_METHODS:
        found.update(read_module(module))
    if entry_points(group=METHODS.entry_point_group):  # only importing a plugin tells what it declares
        found.update({name: Declaration.of(METHODS.get(name)) for name in METHODS.names() if name not in found})
    return found


def read_module(module: str) -> dict[str, Declaration]:
    """The declarations of the classes ``module`` registers with ``@register_method(NAME)``, from its source."""
    spec = find_spec(module)  # locates the file; imports its (light) parent package only
    if spec is None or spec.origin is None:
        raise ValueError(f"method module {module!r} not found")
    tree = ast.parse(Path(spec.origin).read_text(), spec.origin)
    constants: dict[str, Any] = {}
    for node in tree.body:  # module-level constants a declaration may name (trm's SCORES)
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                constants[node.targets[0].id] = _value(node.value, constants)
            except (ValueError, KeyError, TypeError):
                continue  # not a literal: no declaration reads it (else reading that declaration fails below)
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    found = {}
    for node in classes.values():
        for name in _registered_names(node):
            try:
                found[name] = Declaration(_summary(node), _hparams(node, classes, constants))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{module}.{node.name}: hparams is not a declaration of literals ({exc})") from None
    return found


def _registered_names(node: ast.ClassDef) -> list[str]:
    return [
        d.args[0].value
        for d in node.decorator_list
        if isinstance(d, ast.Call)
        and ast.unparse(d.func) in ("register_method", "METHODS.register")
        and d.args
        and isinstance(d.args[0], ast.Constant)
    ]


def _summary(node: ast.ClassDef) -> str:
    lines = (ast.get_docstring(node) or "").strip().splitlines()
    return lines[0] if lines else ""


def _hparams(node: ast.ClassDef, classes: dict[str, ast.ClassDef], constants: dict[str, Any]) -> dict[str, HParam]:
    """The class's own ``hparams``, else its base class's (one in the same module, or ``Method``: none)."""
    for statement in node.body:
        if isinstance(statement, ast.Assign | ast.AnnAssign):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            if any(isinstance(t, ast.Name) and t.id == "hparams" for t in targets):
                return _value(statement.value, constants)
    bases = [ast.unparse(b) for b in node.bases]
    if bases == ["Method"]:
        return {}
    if len(bases) == 1 and bases[0] in classes:
        return _hparams(classes[bases[0]], classes, constants)
    raise ValueError(f"hparams inherited from {', '.join(bases)}")


def _value(node: ast.expr, constants: dict[str, Any]) -> Any:
    """A literal, a module constant, or a call in ``_CALLS`` on such values (nothing else is evaluated)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _CALLS:
        args = [_value(a, constants) for a in node.args]
        return _CALLS[node.func.id](*args, **{k.arg: _value(k.value, constants) for k in node.keywords})
    if isinstance(node, ast.Name):
        return constants[node.id]
    if isinstance(node, ast.Dict):
        return {_value(k, constants): _value(v, constants) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Tuple | ast.List):
        values = [_value(e, constants) for e in node.elts]
        return tuple(values) if isinstance(node, ast.Tuple) else values
    return ast.literal_eval(node)
