"""Suites: YAML files declaring a dataset, transfers, methods, seeds, a budget, parameter grids and tuning."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from benchmarks.config import Budget
from benchmarks.core.settings import declare, of

SUITES_DIR = Path(__file__).parent / "suites"


class SuiteError(ValueError):
    """A suite file is missing or malformed."""


@dataclass
@declare("cell", suite=True)  # the cell settings a suite declares (dataset_options, split_seed, split_fractions, ...)
class Suite:
    name: str
    dataset: str
    transfers: list[tuple[str, str]]
    methods: list[str] = field(default_factory=lambda: ["finetune", "scratch"])
    backbone: str = "unet"
    seeds: list[int] = field(default_factory=lambda: [0])
    few_shot: list[int] = field(default_factory=lambda: [0])
    budget: Budget = Budget()
    params: dict[str, dict[str, list[Any]]] = field(default_factory=dict)  # method -> key -> grid values
    tune: dict[str, Any] | None = None  # {trials, seeds, sampler, space}; None = declared defaults
    needs_data_root: bool = False


def suite_names() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def load_suite(name_or_path: str) -> Suite:
    """A built-in suite by name, or a YAML file by path; errors name the file and the key."""
    path = Path(name_or_path)
    if not path.suffix:
        path = SUITES_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise SuiteError(
                f"--suite {name_or_path!r}: unknown suite; valid: {', '.join(suite_names())} or a .yaml path"
            )
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SuiteError(f"--suite {path}: file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SuiteError(f"--suite {path}: not valid YAML{where}: {what}") from None
    if not isinstance(raw, dict):
        raise SuiteError(f"--suite {path}: expected a mapping at the top level")
    allowed = {f.name for f in fields(Suite)} | {"description"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise SuiteError(f"--suite {path}: unknown key(s) {unknown}; valid: {sorted(allowed)}")
    budget_raw = raw.pop("budget", {}) or {}
    valid_budget = {f.name for f in fields(Budget)}
    if set(budget_raw) - valid_budget:
        raise SuiteError(
            f"--suite {path}: unknown budget key(s) {sorted(set(budget_raw) - valid_budget)}; "
            f"valid: {sorted(valid_budget)}"
        )
    raw.pop("description", None)
    raw["params"] = parse_grid(path, raw.get("params") or {})
    if raw.get("tune") is not None:
        raw["tune"] = parse_tune(path, raw["tune"])
    for s in of("cell"):
        if s.in_suite and s.check and s.attribute in raw:
            try:
                raw[s.attribute] = s.check(raw[s.attribute])
            except ValueError as exc:
                raise SuiteError(f"--suite {path}: {s.attribute}: {exc}") from None
    try:
        transfers = [(t["source"], t["target"]) for t in raw.pop("transfers")]
        return Suite(name=raw.pop("name", path.stem), transfers=transfers, budget=Budget(**budget_raw), **raw)
    except (KeyError, TypeError) as exc:
        raise SuiteError(
            f"--suite {path}: missing or malformed entry ({exc}); need dataset and "
            "transfers: [{source: TASK, target: TASK}, ...]"
        ) from None


def parse_grid(path: Path, raw: Any) -> dict[str, dict[str, list[Any]]]:
    """``params: {trm: {alpha: [0.5, 1, 2]}}``: every key a declared hyperparameter, every grid non-empty,
    every point valid (``MethodConfigError`` names it)."""
    from methods import METHODS, MethodConfigError

    if not isinstance(raw, dict):
        raise SuiteError(f"--suite {path}: params must map a method to {{KEY: [VALUES]}}")
    grid: dict[str, dict[str, list[Any]]] = {}
    for method, keys in raw.items():
        cls = METHODS.get(method)
        if not isinstance(keys, dict) or not keys:
            raise SuiteError(f"--suite {path}: params.{method}: empty grid; give {{KEY: [VALUES]}}")
        grid[method] = {}
        for key, values in keys.items():
            if key not in cls.hparams:
                raise SuiteError(
                    f"--suite {path}: params.{method}.{key}: unknown parameter; valid: {', '.join(cls.hparams)}"
                )
            values = list(values) if isinstance(values, list | tuple) else [values]
            if not values:
                raise SuiteError(f"--suite {path}: params.{method}.{key}: empty grid; give at least one value")
            grid[method][key] = values
        for point in grid_points(grid, method, {}):
            try:
                cls(**point)
            except MethodConfigError as exc:
                raise SuiteError(f"--suite {path}: params.{method}: {exc}") from None
    return grid


def grid_points(grid: dict[str, dict[str, list[Any]]], method: str, pinned: dict[str, Any]) -> list[dict[str, Any]]:
    """The points of a method's grid (one cell each), with ``pinned`` (``--param``) values taking precedence."""
    keys = [k for k in grid.get(method, {}) if k not in pinned]
    points = []
    for values in itertools.product(*(grid[method][k] for k in keys)):
        point = {**dict(zip(keys, values, strict=True)), **pinned}
        if point not in points:
            points.append(point)
    return points


TUNE_KEYS = ("trials", "seeds", "sampler", "space")


def parse_tune(path: Path, raw: Any) -> dict[str, Any]:
    """``tune: {trials: N, seeds: [..], sampler: tpe|random, space: {lr: [lo, hi], METHOD.KEY: [..]}}``."""
    from benchmarks.tune import TuneError, declared_spaces, parse_space_override
    from methods import METHODS

    if not isinstance(raw, dict) or set(raw) - set(TUNE_KEYS):
        raise SuiteError(f"--suite {path}: tune must be a mapping with keys among {', '.join(TUNE_KEYS)}")
    tune = dict(raw)
    trials = tune.get("trials", 0)
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise SuiteError(f"--suite {path}: tune.trials {trials!r}: must be an integer >= 1")
    seeds = tune.get("seeds", [])
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise SuiteError(f"--suite {path}: tune.seeds {seeds!r}: must be a list of integers")
    spaces = declared_spaces(METHODS.names())
    try:
        tune["space"] = {name: parse_space_override(name, v, spaces) for name, v in (tune.get("space") or {}).items()}
    except TuneError as exc:
        raise SuiteError(f"--suite {path}: {exc}") from None
    return tune
