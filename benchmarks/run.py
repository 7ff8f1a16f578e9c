"""``python -m benchmarks.run``: run a suite (or one ad-hoc transfer) and print a summary."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from benchmarks.backbones import BACKBONES
from benchmarks.cell import run_cell
from benchmarks.config import Cell
from benchmarks.data import OpenDataset, open_dataset
from benchmarks.store import Store, StoreError
from benchmarks.suite import Suite, SuiteError, load_suite
from benchmarks.summary import summary_table
from datasets.base import DATASETS, DataError
from datasets.registry import UnknownNameError
from methods import METHODS, MethodConfigError

DEFAULT_CACHE = Path(os.environ.get("NTBENCH_CACHE", Path.home() / ".cache" / "ntbench"))


class UsageError(ValueError):
    """A command-line option is invalid."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    p.add_argument("--suite", default="default", help="built-in suite name or a YAML path (default: default)")
    p.add_argument("--method", action="extend", nargs="+", metavar="NAME", help="method(s) to run (default: the suite's)")
    p.add_argument("--param", action="append", default=[], metavar="METHOD.KEY=VALUE", help="method hyperparameter")
    p.add_argument("--dataset", help="dataset adapter (overrides the suite's)")
    p.add_argument("--data-root", type=Path, help="dataset folder (the embedded phantom needs none)")
    p.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                   help="adapter option, e.g. partitioning=2")
    p.add_argument("--source", help="source task of one ad-hoc transfer (with --target)")
    p.add_argument("--target", help="target task of one ad-hoc transfer (with --source)")
    p.add_argument("--backbone", help="backbone (overrides the suite's)")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (overrides the suite's)")
    p.add_argument("--few-shot", type=int, nargs="+", metavar="K", help="target training subjects; 0 = all")
    p.add_argument("--steps", type=int, help="override every phase's step budget (smoke runs)")
    p.add_argument("--out", type=Path, default=Path("results"), help="results folder (default: results)")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help=f"cache (default: {DEFAULT_CACHE})")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--jobs", type=int, default=1, help="processes for preprocessing")
    p.add_argument("--skip-bad-subjects", action="store_true", help="skip unreadable subjects instead of failing")
    p.add_argument("--force", action="store_true", help="recompute finished cells")
    p.add_argument("--csv", type=Path, help="also export the whole store as CSV to this path")
    p.add_argument("--list-methods", action="store_true", help="list methods and their hyperparameters")
    p.add_argument("--list-datasets", action="store_true", help="list dataset adapters")
    p.add_argument("--list-tasks", metavar="DATASET", help="groups, modalities and regions found in a dataset")
    return p


def _parse_value(text: str) -> object:
    return yaml.safe_load(text)


def method_params(names: list[str], specs: list[str]) -> dict[str, dict]:
    """``--param trm.alpha=2`` -> {"trm": {"alpha": 2}}, validated against declared hyperparameters."""
    params: dict[str, dict] = {n: {} for n in names}
    for spec in specs:
        head, sep, value = spec.partition("=")
        method, dot, key = head.partition(".")
        if not sep or not dot:
            raise UsageError(f"--param {spec!r}: expected METHOD.KEY=VALUE")
        if method not in params:
            raise UsageError(f"--param {spec!r}: method {method!r} is not among --method {' '.join(names)}")
        params[method][key] = _parse_value(value)
    for name in names:
        METHODS.get(name)(**params[name])  # raises MethodConfigError on bad values
    return params


def resolve_device(text: str) -> torch.device:
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UsageError(f"--device {text!r}: expected cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {text}: CUDA is not available on this machine")
    return device


def apply_overrides(suite: Suite, args: argparse.Namespace) -> Suite:
    changes: dict = {}
    if args.dataset:
        changes["dataset"] = args.dataset
    if (args.source is None) != (args.target is None):
        raise UsageError("--source and --target go together")
    if args.source:
        changes["transfers"] = [(args.source, args.target)]
    if args.method:
        changes["methods"] = list(dict.fromkeys(args.method))
    for opt in ("backbone", "seeds", "few_shot"):
        if getattr(args, opt) is not None:
            changes[opt] = getattr(args, opt)
    if args.dataset_option:
        changes["dataset_options"] = {**suite.dataset_options, **{
            k: _parse_value(v) for k, _, v in (o.partition("=") for o in args.dataset_option)}}
    if args.steps is not None:
        if args.steps < 1:
            raise UsageError(f"--steps {args.steps}: must be >= 1")
        changes["budget"] = replace(suite.budget, source_steps=args.steps, target_steps=args.steps)
    return replace(suite, **changes)


def build_cells(suite: Suite, params: dict[str, dict], data: OpenDataset) -> list[Cell]:
    """The grid seeds x few-shot x transfers x methods; validates tasks and few-shot sizes first."""
    BACKBONES.get(suite.backbone)
    for source, target in suite.transfers:
        data.task(source)
        target_task = data.task(target)
        for seed in suite.seeds:
            for k in suite.few_shot:
                data.train_ids(target_task, k, seed)
    cells: dict[str, Cell] = {}
    for seed in suite.seeds:
        for k in suite.few_shot:
            for source, target in suite.transfers:
                for name in suite.methods:
                    scratch = METHODS.get(name).init == "random"
                    cell = Cell(suite=suite.name, dataset=suite.dataset, source_task="" if scratch else source,
                                target_task=target, method=name, backbone=suite.backbone, seed=seed,
                                few_shot=k, method_params=params[name], budget=suite.budget,
                                dataset_options=suite.dataset_options, split_seed=suite.split_seed)
                    cells.setdefault(cell.key, cell)  # scratch is shared by transfers with the same target
    return list(cells.values())


def list_methods() -> str:
    lines = []
    for name in METHODS.names():
        cls = METHODS.get(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        lines.append(f"{name}: {doc}")
        for key, hp in cls.hparams.items():
            choices = f" {{{', '.join(map(str, hp.choices))}}}" if hp.choices else ""
            lines.append(f"    {key} = {hp.default!r}{choices}  {hp.help}")
    return "\n".join(lines)


def list_tasks(name: str, args: argparse.Namespace) -> str:
    cls = DATASETS.get(name)
    adapter = cls(args.data_root or cls.default_root(args.cache_dir))
    return "\n".join([
        f"dataset {name} at {adapter.root}",
        f"groups: {', '.join(adapter.groups()) or '(none)'}",
        f"modalities: {', '.join(adapter.modalities())}",
        f"regions: {', '.join(f'{r}={sorted(v)}' for r, v in adapter.regions.items())}",
        f"labelled subjects: {len(adapter.labelled_subjects())} of {len(adapter.subjects())}",
    ])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.list_methods:
            print(list_methods())
            return 0
        if args.list_datasets:
            print("\n".join(DATASETS.names()))
            return 0
        if args.list_tasks:
            print(list_tasks(args.list_tasks, args))
            return 0
        suite = apply_overrides(load_suite(args.suite), args)
        if suite.needs_data_root and args.data_root is None:
            raise UsageError(f"--suite {suite.name} runs on real data: give --data-root")
        params = method_params(suite.methods, args.param)
        device = resolve_device(args.device)
        store = Store(args.out)
        store.check_writable()
        data = open_dataset(suite.dataset, args.data_root, suite.dataset_options, args.cache_dir,
                            suite.budget.size, suite.split_seed, args.skip_bad_subjects, args.jobs)
        if data.skipped:
            print(f"skipped {len(data.skipped)} bad subject(s): {', '.join(s for s, _ in data.skipped)}",
                  file=sys.stderr)
        cells = build_cells(suite, params, data)
    except (UsageError, SuiteError, DataError, StoreError, UnknownNameError, MethodConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    todo = [c for c in cells if args.force or store.status(c.key) is None]
    print(f"{len(cells)} cells, {len(cells) - len(todo)} already done, running {len(todo)} on {device}",
          file=sys.stderr)
    for i, cell in enumerate(todo, 1):
        rows = run_cell(cell, data, store, args.cache_dir, device)
        state = rows["status"].iloc[0]
        print(f"[{i}/{len(todo)}] {cell.method} {cell.transfer} seed={cell.seed} k={cell.few_shot}: {state}"
              f" ({rows['wall_s'].iloc[0]:.1f} s)", file=sys.stderr)
        if state == "failed":
            print("    " + rows["error"].iloc[0].splitlines()[0], file=sys.stderr)
    print(summary_table(store.read(), cells))
    if args.csv:
        store.export_csv(args.csv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
