"""One setting spec (issue 23, item 1): every setting is declared once, in ``benchmarks.core.settings.SETTINGS``, and
the cell key, the source key, the store's schema, the leaderboard's and the summary's setting columns, the suite's
fields and the runner's options derive from it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.core.settings import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "benchmarks" / "core" / "settings.py"
NAMES = {s.name for s in SETTINGS} | {s.attribute for s in SETTINGS}
# The copies the spec replaced, by module: each is now computed from the spec and names no setting itself.
DERIVED = {
    "benchmarks/config.py": ("KEY_STABLE_DEFAULTS", "UNHASHED"),
    "benchmarks/core/schema.py": ("REQUIRED_SCHEMA", "SETTING_SCHEMA", "FIXED_BEFORE", "RUN_DEFAULTS", "NOT_SCORES"),
    "benchmarks/summary.py": ("SAME_SETTING",),
    "leaderboard/settings.py": ("PROVENANCE_ONLY", "SETTING_COLUMNS", "ALWAYS_LABELLED", "TUNED_COLUMNS"),
}
# Literal collections naming two or more settings that are uses, not declarations.
USES = {
    ("benchmarks/summary.py", frozenset({"tuned_trials", "lr"})),  # the summary's table rows: variant, tuning, lr
    ("benchmarks/grid.py", frozenset({"fingerprint", "checkpoint"})),  # cell_identity: the two values it computes
    ("benchmarks/cli.py", frozenset({"threads", "source_seed"})),  # MINIMUM: the smallest value of each option
    ("methods/l2sp.py", frozenset({"lr", "weight_decay"})),  # a torch optimiser parameter group
    # estimator rows repeat three setting columns (work in progress there; benchmarks.cell.setting_columns has them)
    ("benchmarks/estimate.py", frozenset({"target_steps", "data_fingerprint", "smoke"})),
}


def _sources() -> list[Path]:
    return [p for d in ("benchmarks", "leaderboard", "methods", "datasets") for p in sorted((ROOT / d).rglob("*.py"))]


def _named(node: ast.AST) -> set[str]:
    """Setting names among the string constants directly listed by a tuple, list, set or dict display."""
    if isinstance(node, ast.Dict):
        elements = [k for k in node.keys if k is not None]
    elif isinstance(node, ast.Tuple | ast.List | ast.Set):
        elements = node.elts
    else:
        return set()
    return {e.value for e in elements if isinstance(e, ast.Constant) and e.value in NAMES}


def test_each_setting_is_declared_once_in_the_spec() -> None:
    calls = [n for n in ast.walk(ast.parse(SPEC.read_text())) if isinstance(n, ast.Call)]
    declared = [c.args[0].value for c in calls if getattr(c.func, "id", "") == "Setting"]
    assert sorted(declared) == sorted(s.name for s in SETTINGS) and len(set(declared)) == len(declared)


def test_no_other_module_lists_settings() -> None:
    """Grep-level: outside the spec, no literal collection names two settings (bar the listed uses), and the
    tables the spec replaced are computed from it."""
    found = set()
    for path in _sources():
        if path == SPEC:
            continue
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text())
        found |= {(rel, frozenset(hit)) for node in ast.walk(tree) if len(hit := _named(node)) >= 2}
        for node in (n for n in ast.walk(tree) if isinstance(n, ast.Assign | ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(getattr(t, "id", None) in DERIVED.get(rel, ()) for t in targets):
                literals = {c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant)}
                assert not literals & NAMES, f"{rel}: {ast.unparse(targets[0])} names {literals & NAMES}"
    assert found <= USES, f"settings listed outside benchmarks/core/settings.py: {sorted(found - USES)}"


def test_config_classes_declare_no_setting_themselves() -> None:
    """Budget, Cell and Suite get their setting fields from the spec (``declare``); their bodies hold none."""
    for rel, classes in (("benchmarks/config.py", ("Budget", "Cell")), ("benchmarks/suite.py", ("Suite",))):
        tree = ast.parse((ROOT / rel).read_text())
        for node in (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in classes):
            own = {f.target.id for f in node.body if isinstance(f, ast.AnnAssign)}
            assert not own & NAMES, f"{node.name} declares {own & NAMES} itself"


DUMMY = """
import dataclasses, json, sys, tempfile
from argparse import Namespace
from dataclasses import replace
from pathlib import Path

import benchmarks.core.settings as spec

spec.SETTINGS = (
    *spec.SETTINGS,
    spec.Setting("dummy_knob", int, 0, "a budget setting", "budget", flag="--dummy-knob", key=spec.ADDED,
                 source_key=True, column=spec.SETTING),
    spec.Setting("dummy_mode", str, "a", "a cell setting", "cell", in_suite=True, key=spec.ADDED, column=spec.SETTING),
)

from benchmarks.cell import setting_columns
from benchmarks.cli import apply_overrides, build_parser
from benchmarks.config import KEY_STABLE_DEFAULTS, Budget, Cell
from benchmarks.core.schema import SCHEMA, SETTING_SCHEMA
from benchmarks.grid import make_cell
from benchmarks.sources import source_key
from benchmarks.suite import load_suite
from benchmarks.summary import SAME_SETTING
from leaderboard.settings import SETTING_COLUMNS

cell = Cell("default", "phantom", "01-t2-WT", "01-t1-WT", "finetune", "unet", 0)
knob = replace(cell, budget=replace(cell.budget, dummy_knob=3))
args = build_parser().parse_args([])
args.dummy_knob = 5
yaml = Path(tempfile.mkdtemp()) / "s.yaml"
yaml.write_text(
    "dataset: phantom\\ndummy_mode: b\\nbudget: {dummy_knob: 2}\\ntransfers: [{source: 01-t2-WT, target: 01-t1-WT}]\\n"
)
suite = load_suite(str(yaml))
made = make_cell(suite, "01-t2-WT", "01-t1-WT", "finetune", 0, 0, {})
print(json.dumps({
    "budget_field": Budget().dummy_knob,
    "key_stable": [KEY_STABLE_DEFAULTS["budget"].get("dummy_knob"), KEY_STABLE_DEFAULTS["cell"].get("dummy_mode")],
    "key_at_default": cell.key,
    "source_key_at_default": source_key(cell),
    "key_moves": knob.key != cell.key and replace(cell, dummy_mode="b").key != cell.key,
    "source_key_moves": source_key(knob) != source_key(cell),
    "schema": [SETTING_SCHEMA.get("dummy_knob") is int, SCHEMA.get("dummy_mode") is str],
    "leaderboard": [c in SETTING_COLUMNS for c in ("dummy_knob", "dummy_mode")],
    "summary": [c in SAME_SETTING for c in ("dummy_knob", "dummy_mode")],
    "stored": [setting_columns(knob)["dummy_knob"], setting_columns(made)["dummy_mode"]],
    "option": apply_overrides(load_suite("phantom"), args).budget.dummy_knob,
    "suite": [suite.budget.dummy_knob, suite.dummy_mode, made.dummy_mode, made.budget.dummy_knob],
}))
"""


@pytest.mark.slow
def test_a_dummy_setting_added_to_the_spec_alone_reaches_every_layer() -> None:
    """Extending ``SETTINGS`` (and nothing else) gives the dataclasses, keys, schema, leaderboard, summary, store
    columns, suite files and runner options the new setting; at its default every key stays as it was."""
    out = subprocess.run([sys.executable, "-c", DUMMY], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["budget_field"] == 0 and got["key_stable"] == [0, "a"]
    assert got["key_at_default"] == "e20e5f62c295e022"  # tests/test_config.py's pinned finetune key
    assert got["source_key_at_default"] == "aa23ccdab5351542"  # and its pinned source key
    assert got["key_moves"] and got["source_key_moves"]
    assert got["schema"] == [True, True] and got["leaderboard"] == [True, True] and got["summary"] == [True, True]
    assert got["stored"] == [3, "b"] and got["option"] == 5 and got["suite"] == [2, "b", "b", 2]
