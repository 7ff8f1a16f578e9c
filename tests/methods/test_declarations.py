"""``--list-methods`` reads the built-in methods' declarations from source: as importing them gives, without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from methods.base import BUILTIN_METHODS, METHODS
from methods.declarations import Declaration, read_module

ROOT = Path(__file__).resolve().parents[2]


def test_every_builtin_reads_as_imported() -> None:
    read = {name: d for module in BUILTIN_METHODS for name, d in read_module(module).items()}
    builtins = [name for name in METHODS.names() if METHODS.get(name).__module__ in BUILTIN_METHODS]
    assert sorted(read) == builtins
    for name, declared in read.items():
        assert declared == Declaration.of(METHODS.get(name)), f"{name}: source and class disagree"


def test_listing_loads_no_torch() -> None:
    code = "import json, sys, benchmarks.cli as cli; cli.list_methods(); print(json.dumps([*sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert not {"torch", "monai", "optuna", "pandas"} & set(json.loads(out))


def test_a_declaration_that_is_not_literal_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "odd_methods").mkdir()
    (tmp_path / "odd_methods" / "__init__.py").write_text("")
    (tmp_path / "odd_methods" / "computed.py").write_text(
        "from methods import HParam, Method, register_method\n\n\n"
        '@register_method("computed")\n'
        "class Computed(Method):\n"
        '    """Declares a default computed at import."""\n\n'
        '    hparams = {"x": HParam(default_x(), "x")}\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=r"^odd_methods\.computed\.Computed: hparams is not a declaration of literals"):
        read_module("odd_methods.computed")
