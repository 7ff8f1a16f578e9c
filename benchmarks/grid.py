"""The grid of a run: option parsing for methods and datasets, the cells, and each cell's identity.

The cell, method and backbone modules (and with them torch) are imported by the functions that
need them, so that the command line's option checks import only this module's light top.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from benchmarks.config import Cell
    from benchmarks.data import OpenDataset
    from benchmarks.suite import Suite


class UsageError(ValueError):
    """A command-line option is invalid."""


def parse_value(text: str) -> object:
    """A command-line value parsed as a YAML scalar (``2`` -> 2, ``true`` -> True, ``a`` -> "a")."""
    return yaml.safe_load(text)


def dataset_options(specs: list[str]) -> dict[str, object]:
    """``--dataset-option partitioning=2`` -> {"partitioning": 2} (values parsed as YAML scalars)."""
    options: dict[str, object] = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--dataset-option {spec!r}: expected KEY=VALUE")
        options[key.strip()] = parse_value(value)
    return options


def method_params(names: list[str], specs: list[str]) -> dict[str, dict]:
    """``--param trm.alpha=2`` -> {"trm": {"alpha": 2}}, validated against declared hyperparameters."""
    from methods import METHODS

    params: dict[str, dict] = {n: {} for n in names}
    for spec in specs:
        head, sep, value = spec.partition("=")
        method, dot, key = head.partition(".")
        if not sep or not dot:
            raise UsageError(f"--param {spec!r}: expected METHOD.KEY=VALUE")
        if method not in params:
            raise UsageError(f"--param {spec!r}: method {method!r} is not among --method {' '.join(names)}")
        params[method][key] = parse_value(value)
    for name in names:
        METHODS.get(name)(**params[name])  # raises MethodConfigError on bad values
    return params


def grid_cells(suite: Suite, params: dict[str, dict]) -> list[Cell]:
    """The grid seeds x few-shot x transfers x methods, one cell per distinct key."""
    from benchmarks.config import Cell
    from benchmarks.suite import grid_points
    from methods import METHODS

    cells: dict[str, Cell] = {}
    for seed in suite.seeds:
        for k in suite.few_shot:
            for source, target in suite.transfers:
                for name, point in ((n, p) for n in suite.methods for p in grid_points(suite.params, n, params[n])):
                    scratch = METHODS.get(name).init == "random"
                    cell = Cell(
                        suite=suite.name,
                        dataset=suite.dataset,
                        source_task="" if scratch else source,
                        target_task=target,
                        method=name,
                        backbone=suite.backbone,
                        seed=seed,
                        few_shot=k,
                        method_params=point,
                        budget=suite.budget,
                        dataset_options=suite.dataset_options,
                        split_seed=suite.split_seed,
                        split_fractions=suite.split_fractions,
                    )
                    cells.setdefault(cell.key, cell)  # scratch is shared by transfers with the same target
    return list(cells.values())


def build_cells(suite: Suite, params: dict[str, dict], data: OpenDataset, checkpoint: Path | None = None) -> list[Cell]:
    """The grid seeds x few-shot x transfers x methods; validates tasks, few-shot sizes and checkpoint first.

    Every cell's key includes a fingerprint of the split's subject ids and of the checkpoint's bytes, so
    results computed on other data (or other initial weights) are never mistaken for finished cells.
    """
    from benchmarks.backbones import build_backbone

    build_backbone(suite.backbone, 1, 2, checkpoint, size=suite.budget.size)  # refuses an unknown one, or a misfit
    cells = [replace(cell, **cell_identity(data, checkpoint)) for cell in grid_cells(suite, params)]
    for source, target in suite.transfers:
        data.task(source)
        target_task = data.task(target)
        for seed in suite.seeds:
            for k in suite.few_shot:
                data.train_ids(target_task, k, seed)
    check_methods(cells, data)
    return cells


def check_methods(cells: list[Cell], data: OpenDataset) -> None:
    """Each (method, parameters, transfer) of the grid can run before any work starts.

    An impossible request (the trm oracle on a transfer without ground-truth risk maps) is a one-line
    ``MethodConfigError`` here, never a trained source model followed by a failed cell. A method that
    declines a backbone or task (``Method.check``) is not an error: that cell is skipped with the reason.
    """
    from methods import METHODS, MethodConfigError

    seen: set[tuple[str, str, str, str]] = set()
    for cell in cells:
        key = (cell.method, json.dumps(cell.method_params, sort_keys=True), cell.source_task, cell.target_task)
        if key in seen:
            continue
        seen.add(key)
        method = METHODS.get(cell.method)(**cell.method_params)
        if method.needs_risk_maps() and not data.has_risk(data.task(cell.source_task), data.task(cell.target_task)):
            raise MethodConfigError(
                f"method {cell.method!r} with {cell.method_params} needs ground-truth risk maps, and dataset "
                f"{data.name!r} has none for {cell.source_task} -> {cell.target_task} (brainsim dial transfers have)"
            )


def cell_identity(data: OpenDataset, checkpoint: Path | None) -> dict[str, str]:
    """The ``fingerprint`` (split subject ids + checkpoint bytes) and ``checkpoint`` fields of a cell."""
    digest = hashlib.sha1(json.dumps(data.split, sort_keys=True).encode())
    if checkpoint is not None:
        digest.update(Path(checkpoint).read_bytes())
    return {"fingerprint": digest.hexdigest()[:16], "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else ""}
