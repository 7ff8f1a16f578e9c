"""Suites: YAML files declaring a dataset, transfers, methods, seeds and a budget."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from benchmarks.config import Budget

SUITES_DIR = Path(__file__).parent / "suites"


class SuiteError(ValueError):
    """A suite file is missing or malformed."""


@dataclass
class Suite:
    name: str
    dataset: str
    transfers: list[tuple[str, str]]
    methods: list[str] = field(default_factory=lambda: ["finetune", "scratch"])
    backbone: str = "unet"
    seeds: list[int] = field(default_factory=lambda: [0])
    few_shot: list[int] = field(default_factory=lambda: [0])
    budget: Budget = Budget()
    dataset_options: dict[str, Any] = field(default_factory=dict)
    split_seed: int = 0
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
        raise SuiteError(f"--suite {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
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
    try:
        transfers = [(t["source"], t["target"]) for t in raw.pop("transfers")]
        return Suite(name=raw.pop("name", path.stem), transfers=transfers, budget=Budget(**budget_raw), **raw)
    except (KeyError, TypeError) as exc:
        raise SuiteError(
            f"--suite {path}: missing or malformed entry ({exc}); need dataset and "
            "transfers: [{source: TASK, target: TASK}, ...]"
        ) from None
