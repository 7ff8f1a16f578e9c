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

from benchmarks.core.options import UsageError
from benchmarks.threads import DEFAULT_THREADS

if TYPE_CHECKING:
    import argparse

    from benchmarks.config import Cell
    from benchmarks.data import OpenDataset
    from benchmarks.suite import Suite
    from datasets.base import Task


def parse_value(text: str) -> object:
    """A command-line value parsed as a YAML scalar (``2`` -> 2, ``true`` -> True, ``a`` -> "a")."""
    return yaml.safe_load(text)


def dataset_options(specs: list[str], option: str = "--dataset-option") -> dict[str, object]:
    """``--dataset-option partitioning=2`` -> {"partitioning": 2} (values parsed as YAML scalars)."""
    options: dict[str, object] = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{option} {spec!r}: expected KEY=VALUE")
        options[key.strip()] = parse_value(value)
    return options


def apply_settings(suite: Suite, args: argparse.Namespace) -> Suite:
    """The suite with what each command-line option that sets a setting (``Setting.flag``) gives: budget settings
    in its budget, the others at its top level. ``--steps`` sets both phases' steps and marks a smoke run; a
    ``KEY=VALUE`` option adds to the suite's mapping. Options a tool does not have, or left out, change nothing.
    """
    from benchmarks.core.settings import GIVEN, SETTINGS

    budget, top = {}, {}
    for s in SETTINGS:
        given = getattr(args, s.flag[2:].replace("-", "_"), None) if s.flag else None
        if given is None or given == [] or not (s.holder == "budget" or s.in_suite):
            continue
        value = given if s.flag_value == GIVEN else s.flag_value
        if isinstance(s.default, dict):
            value = {**getattr(suite, s.attribute), **dataset_options(given, s.flag)}
        (budget if s.holder == "budget" else top)[s.attribute] = value
    if budget:
        top["budget"] = replace(suite.budget, **budget)
    return replace(suite, **top)


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


def make_cell(
    suite: Suite,
    source: str,
    target: str,
    method: str,
    seed: int,
    few_shot: int,
    params: dict[str, object],
    identity: dict[str, str] | None = None,
    threads: int = DEFAULT_THREADS,
) -> Cell:
    """The one way a cell is made (the runner's grid, ``import_predictions``, ``riskmap``, ``estimate``): one point
    of the suite's grid, with the suite's dataset, backbone, budget and the settings it declares, the run's data
    ``identity`` (``cell_identity``) and the run's torch threads per cell."""
    from benchmarks.config import Cell
    from benchmarks.core.settings import of

    declared = {s.attribute: getattr(suite, s.attribute) for s in of("cell") if s.in_suite}
    return Cell(
        suite=suite.name,
        dataset=suite.dataset,
        source_task=source,
        target_task=target,
        method=method,
        backbone=suite.backbone,
        seed=seed,
        few_shot=few_shot,
        method_params=params,
        budget=suite.budget,
        **declared,
        **(identity or {}),
        threads=threads,
    )


def grid_cells(
    suite: Suite, params: dict[str, dict], identity: dict[str, str] | None = None, threads: int = DEFAULT_THREADS
) -> list[Cell]:
    """The grid seeds x few-shot x transfers x methods, one cell per distinct key."""
    from benchmarks.suite import grid_points
    from methods import METHODS

    cells: dict[str, Cell] = {}
    for seed in suite.seeds:
        for k in suite.few_shot:
            for source, target in suite.transfers:
                for name, point in ((n, p) for n in suite.methods for p in grid_points(suite.params, n, params[n])):
                    scratch = METHODS.get(name).init == "random"
                    cell = make_cell(suite, "" if scratch else source, target, name, seed, k, point, identity, threads)
                    cells.setdefault(cell.key, cell)  # scratch is shared by transfers with the same target
    return list(cells.values())


def build_cells(
    suite: Suite,
    params: dict[str, dict],
    data: OpenDataset,
    checkpoint: Path | None = None,
    threads: int = DEFAULT_THREADS,
) -> list[Cell]:
    """The grid seeds x few-shot x transfers x methods; validates tasks, few-shot sizes and checkpoint first.

    Every cell's key includes a fingerprint of the split's subject ids and of the checkpoint's bytes (read once),
    so results computed on other data (or other initial weights) are never mistaken for finished cells.
    """
    from benchmarks.backbones import build_backbone

    build_backbone(suite.backbone, 1, 2, checkpoint, size=suite.budget.size)  # refuses an unknown one, or a misfit
    tasks = {text: data.task(text) for transfer in suite.transfers for text in transfer}
    for _, target in suite.transfers:
        for seed in suite.seeds:
            for k in suite.few_shot:
                data.train_ids(tasks[target], k, seed)
    cells = grid_cells(suite, params, cell_identity(data, checkpoint), threads)
    check_methods(cells, data, tasks)
    return cells


def check_methods(cells: list[Cell], data: OpenDataset, tasks: dict[str, Task]) -> None:
    """Each (method, parameters, transfer) of the grid can run before any work starts.

    An impossible request (the trm oracle on a transfer without ground-truth risk maps) is a one-line
    ``MethodConfigError`` here, never a trained source model followed by a failed cell. A method that
    declines a backbone or task (``Method.check``) is not an error: that cell is skipped with the reason.
    ``tasks`` holds the transfers' parsed tasks.
    """
    from methods import METHODS, MethodConfigError

    seen: set[tuple[str, str, str, str]] = set()
    for cell in cells:
        key = (cell.method, json.dumps(cell.method_params, sort_keys=True), cell.source_task, cell.target_task)
        if key in seen:
            continue
        seen.add(key)
        method = METHODS.get(cell.method)(**cell.method_params)
        if method.needs_risk_maps() and not data.has_risk(tasks[cell.source_task], tasks[cell.target_task]):
            raise MethodConfigError(
                f"method {cell.method!r} with {cell.method_params} needs ground-truth risk maps, and dataset "
                f"{data.name!r} has none for {cell.source_task} -> {cell.target_task} (brainsim dial transfers have)"
            )


def cell_identity(data: OpenDataset, checkpoint: Path | None) -> dict[str, str]:
    """The ``fingerprint`` (split subject ids + checkpoint bytes) and ``checkpoint`` fields of a run's cells:
    computed once per run (the checkpoint file is read here, whole)."""
    digest = hashlib.sha1(json.dumps(data.split, sort_keys=True).encode())
    if checkpoint is not None:
        digest.update(Path(checkpoint).read_bytes())
    return {"fingerprint": digest.hexdigest()[:16], "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else ""}
