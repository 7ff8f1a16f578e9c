"""Imports flow one way (docs/design.md §Layers): core at the bottom, the leaderboard without torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _loaded(module: str) -> list[str]:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("datasets.core.registry", ("torch", "methods", "leaderboard", "benchmarks")),
        ("benchmarks.core.schema", ("torch", "pandas", "datasets.base", "methods", "leaderboard")),
        ("leaderboard.build", ("torch", "methods", "datasets.base", "benchmarks.cli", "benchmarks.cell")),
        ("methods", ("leaderboard", "benchmarks.cli", "benchmarks.cell", "benchmarks.train")),
        ("datasets", ("methods", "leaderboard", "benchmarks.cli", "benchmarks.cell")),
    ],
)
def test_module_imports_only_lower_layers(module: str, forbidden: tuple[str, ...]) -> None:
    loaded = _loaded(module)
    bad = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in forbidden)]
    assert not bad, f"{module} imports {bad[:5]}"
