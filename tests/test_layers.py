"""Imports flow one way (docs/design.md §Layers), read statically: every import statement of every module, at the
top or inside a function, against the documented layer order, and no import cycle between ntbench modules."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("datasets", "methods", "benchmarks", "leaderboard")
# Each layer and the layers it may import (docs/design.md §Layers); a module belongs to the longest prefix.
LAYERS: dict[str, set[str]] = {
    "datasets.core": set(),
    "datasets": {"datasets.core"},
    "methods": {"datasets.core", "datasets"},
    "benchmarks.core": {"datasets.core"},
    "leaderboard": {"datasets.core", "benchmarks.core"},
    "benchmarks": {"datasets.core", "datasets", "methods", "benchmarks.core", "leaderboard"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _type_only(tree: ast.Module) -> set[int]:
    """Line numbers of the imports under ``if TYPE_CHECKING:``: they never run."""
    blocks = [n for n in ast.walk(tree) if isinstance(n, ast.If) and ast.unparse(n.test).endswith("TYPE_CHECKING")]
    return {i.lineno for b in blocks for s in b.body for i in ast.walk(s) if isinstance(i, ast.Import | ast.ImportFrom)}


def _imports(name: str, path: Path) -> tuple[set[str], set[str]]:
    """The ntbench modules ``name`` imports anywhere in its source, at the top or in a function (``from X import Y``
    names X.Y where Y is a module): those that run, and those under ``if TYPE_CHECKING:``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    typing_only = _type_only(tree)
    runs, types = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found = {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            found = {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
        else:
            continue
        (types if node.lineno in typing_only else runs).update(m for m in found if m.split(".")[0] in PACKAGES)
    return runs, types


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> str:
    return max((layer for layer in LAYERS if module == layer or module.startswith(layer + ".")), key=len)


def test_every_import_goes_down_the_layers() -> None:
    """Type-only imports too: a lower layer that names an upper layer's type depends on it."""
    bad = [
        f"{module} ({_layer(module)}) imports {target} ({_layer(target)})"
        for module, (runs, types) in sorted(IMPORTS.items())
        for target in sorted(runs | types)
        if _layer(target) != _layer(module) and _layer(target) not in LAYERS[_layer(module)]
    ]
    assert not bad, "\n".join(bad)


def test_no_import_cycles() -> None:
    """Depth-first search over the imports that run, lazy ones included: a back edge closes a cycle."""
    graph = {module: runs for module, (runs, _) in IMPORTS.items()}
    cycles, state = [], dict.fromkeys(graph, 0)  # 0 unseen, 1 on the current path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif state.get(target) == 0:
                visit(target, [*path, target])
        state[module] = 2

    for module in graph:
        if state[module] == 0:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_the_layer_test_reads_every_package() -> None:
    assert {_layer(m) for m in MODULES} == set(LAYERS) and {"benchmarks.cli", "methods.trm"} <= set(IMPORTS)
    assert IMPORTS["benchmarks.cli"][0] >= {"benchmarks.executors", "methods"}  # lazy imports in main/run are read


def _loaded(module: str) -> tuple[list[str], dict[str, str]]:
    """Modules loaded and the OpenMP variables set by importing ``module`` in a fresh interpreter."""
    code = f"import json, os, sys, {module}; print(json.dumps([sorted(sys.modules), dict(os.environ)]))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT, env=env)
    loaded, environ = json.loads(out.stdout)
    return loaded, {k: v for k, v in environ.items() if k == "OMP_WAIT_POLICY"}


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("datasets.core.registry", ("torch", "numpy", "datasets.base", "methods", "benchmarks", "leaderboard")),
        ("benchmarks.core.schema", ("torch", "pandas", "datasets.base", "methods", "leaderboard", "benchmarks.grid")),
        ("leaderboard.build", ("torch", "methods", "datasets.base", "benchmarks.cli", "benchmarks.threads")),
        ("methods", ("torch", "leaderboard", "benchmarks")),
        ("datasets", ("torch", "numpy", "methods", "leaderboard", "benchmarks")),
    ],
)
def test_light_layers_load_nothing_heavy_nor_start_the_runner(module: str, forbidden: tuple[str, ...]) -> None:
    """Importing a lower layer or the leaderboard loads no torch, nothing above it, and sets no OpenMP variable
    (the runner's start-up, ``benchmarks.threads.configure_openmp``, runs in its entry points only)."""
    loaded, omp = _loaded(module)
    bad = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in forbidden)]
    assert not bad and not omp, f"{module} imports {bad[:5]}, sets {omp}"
