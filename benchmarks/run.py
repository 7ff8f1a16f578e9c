"""``python -m benchmarks.run``: run a suite (or one ad-hoc transfer) and print a summary.

Cells run in this process, in local worker processes, as a SLURM job array or as Ray tasks
(--executor); every executor writes the same store, and rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from benchmarks.backbones import CheckpointError, build_backbone
from benchmarks.config import Cell
from benchmarks.data import OpenDataset, open_dataset
from benchmarks.executors import (
    Executor,
    ExecutorError,
    InProcess,
    Job,
    LocalPool,
    RayTasks,
    Slurm,
    Tally,
    publish,
    run_grid,
)
from benchmarks.sources import source_key
from benchmarks.store import Store, StoreError
from benchmarks.suite import Suite, SuiteError, load_suite
from benchmarks.summary import summary_table
from datasets.base import DATASETS, DataError
from datasets.registry import UnknownNameError
from methods import METHODS, MethodConfigError

DEFAULT_CACHE = Path(os.environ.get("NTBENCH_CACHE", Path.home() / ".cache" / "ntbench"))
SLURM_TIME_MIN = 60
SLURM_OPTIONS = (
    "slurm_partition",
    "slurm_time",
    "slurm_gpus",
    "slurm_cpus",
    "slurm_array_parallelism",
    "slurm_extra",
    "slurm_folder",
    "slurm_cluster",
)
RAY_OPTIONS = ("ray_address", "ray_cpus")


class UsageError(ValueError):
    """A command-line option is invalid."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    p.add_argument("--suite", default="default", help="built-in suite name or a YAML path (default: default)")
    p.add_argument(
        "--method", action="extend", nargs="+", metavar="NAME", help="method(s) to run (default: the suite's)"
    )
    p.add_argument("--param", action="append", default=[], metavar="METHOD.KEY=VALUE", help="method hyperparameter")
    p.add_argument("--dataset", help="dataset adapter (overrides the suite's)")
    p.add_argument("--data-root", type=Path, help="dataset folder (the embedded phantom needs none)")
    p.add_argument(
        "--dataset-option", action="append", default=[], metavar="KEY=VALUE", help="adapter option, e.g. partitioning=2"
    )
    p.add_argument("--source", help="source task of one ad-hoc transfer (with --target)")
    p.add_argument("--target", help="target task of one ad-hoc transfer (with --source)")
    p.add_argument("--backbone", help="backbone (overrides the suite's)")
    p.add_argument(
        "--checkpoint", type=Path, help="initial weights of the backbone (state dict) instead of random init"
    )
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (overrides the suite's)")
    p.add_argument("--few-shot", type=int, nargs="+", metavar="K", help="target training subjects; 0 = all")
    p.add_argument("--steps", type=int, help="override every phase's step budget (smoke runs)")
    p.add_argument("--out", type=Path, default=Path("results"), help="results folder (default: results)")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help=f"cache (default: {DEFAULT_CACHE})")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="cells at once on this machine (--executor local worker processes, or the CPUs of a "
        "local Ray cluster) and preprocessing processes (default: 1, in this process)",
    )
    p.add_argument("--skip-bad-subjects", action="store_true", help="skip unreadable subjects instead of failing")
    p.add_argument("--force", action="store_true", help="recompute finished cells")
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="rerun failed cells (by default a failed cell counts as done); ok cells are untouched",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list the grid's cells, which are done or failed, and the work left; run nothing",
    )
    p.add_argument(
        "--executor",
        choices=("local", "slurm", "ray"),
        default="local",
        help="where the cells run: local processes, a SLURM job array (submitit) or Ray tasks",
    )
    p.add_argument("--csv", type=Path, help="also export the whole store as CSV to this path")
    p.add_argument("--list-methods", action="store_true", help="list methods and their hyperparameters")
    p.add_argument("--list-datasets", action="store_true", help="list dataset adapters")
    p.add_argument("--list-tasks", metavar="DATASET", help="groups, modalities and regions found in a dataset")
    slurm = p.add_argument_group("--executor slurm (submitit job arrays)")
    slurm.add_argument("--slurm-partition", metavar="NAME", help="partition (default: the cluster's)")
    slurm.add_argument(
        "--slurm-time", type=int, metavar="MIN", help=f"time limit per cell job in minutes (default: {SLURM_TIME_MIN})"
    )
    slurm.add_argument("--slurm-gpus", type=int, metavar="N", help="GPUs per cell job (default: 0; a cell uses one)")
    slurm.add_argument("--slurm-cpus", type=int, metavar="N", help="CPUs per cell job (default: the cluster's)")
    slurm.add_argument(
        "--slurm-array-parallelism", type=int, metavar="N", help="array tasks running at once (default: 256)"
    )
    slurm.add_argument(
        "--slurm-extra",
        action="append",
        metavar="KEY=VALUE",
        help="extra sbatch flag, e.g. account=abc, qos=high, mem=16G (repeatable)",
    )
    slurm.add_argument(
        "--slurm-folder", type=Path, metavar="DIR", help="submitit logs and job pickles (default: OUT/slurm)"
    )
    slurm.add_argument(
        "--slurm-cluster",
        choices=("slurm", "local"),
        help="slurm (default), or local: run the jobs as processes here (submitit LocalExecutor)",
    )
    ray = p.add_argument_group("--executor ray")
    ray.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="an existing cluster, e.g. ray://head:10001 or auto "
        "(default: RAY_ADDRESS, else a local cluster of --jobs CPUs started for the run)",
    )
    ray.add_argument("--ray-cpus", type=int, metavar="N", help="CPUs per cell task (default: 1)")
    return p


def _parse_value(text: str) -> object:
    return yaml.safe_load(text)


def dataset_options(specs: list[str]) -> dict[str, object]:
    """``--dataset-option partitioning=2`` -> {"partitioning": 2} (values parsed as YAML scalars)."""
    return {key: _parse_value(value) for key, _, value in (spec.partition("=") for spec in specs)}


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
        changes["dataset_options"] = {
            **suite.dataset_options,
            **dataset_options(args.dataset_option),
        }
    if args.steps is not None:
        if args.steps < 1:
            raise UsageError(f"--steps {args.steps}: must be >= 1")
        changes["budget"] = replace(suite.budget, source_steps=args.steps, target_steps=args.steps)
    return replace(suite, **changes)


def grid_cells(suite: Suite, params: dict[str, dict]) -> list[Cell]:
    """The grid seeds x few-shot x transfers x methods, one cell per distinct key."""
    cells: dict[str, Cell] = {}
    for seed in suite.seeds:
        for k in suite.few_shot:
            for source, target in suite.transfers:
                for name in suite.methods:
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
                        method_params=params[name],
                        budget=suite.budget,
                        dataset_options=suite.dataset_options,
                        split_seed=suite.split_seed,
                    )
                    cells.setdefault(cell.key, cell)  # scratch is shared by transfers with the same target
    return list(cells.values())


def build_cells(suite: Suite, params: dict[str, dict], data: OpenDataset, checkpoint: Path | None = None) -> list[Cell]:
    """The grid seeds x few-shot x transfers x methods; validates tasks, few-shot sizes and checkpoint first.

    Every cell's key includes a fingerprint of the split's subject ids and of the checkpoint's bytes, so
    results computed on other data (or other initial weights) are never mistaken for finished cells.
    """
    build_backbone(suite.backbone, 1, 2, checkpoint)  # unknown backbone or a checkpoint that does not fit
    for source, target in suite.transfers:
        data.task(source)
        target_task = data.task(target)
        for seed in suite.seeds:
            for k in suite.few_shot:
                data.train_ids(target_task, k, seed)
    return [replace(cell, **cell_identity(data, checkpoint)) for cell in grid_cells(suite, params)]


def cell_identity(data: OpenDataset, checkpoint: Path | None) -> dict[str, str]:
    """The ``fingerprint`` (split subject ids + checkpoint bytes) and ``checkpoint`` fields of a cell."""
    digest = hashlib.sha1(json.dumps(data.split, sort_keys=True).encode())
    if checkpoint is not None:
        digest.update(Path(checkpoint).read_bytes())
    return {"fingerprint": digest.hexdigest()[:16], "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else ""}


def _at_least(args: argparse.Namespace, name: str, minimum: int = 1) -> None:
    value = getattr(args, name)
    if value is not None and value < minimum:
        raise UsageError(f"--{name.replace('_', '-')} {value}: must be >= {minimum}")


def check_executor_options(args: argparse.Namespace) -> None:
    """Validate executor options before anything is opened or written."""
    for name, minimum in (
        ("jobs", 1),
        ("slurm_time", 1),
        ("slurm_gpus", 0),
        ("slurm_cpus", 1),
        ("slurm_array_parallelism", 1),
        ("ray_cpus", 1),
    ):
        _at_least(args, name, minimum)
    for executor, names in (("slurm", SLURM_OPTIONS), ("ray", RAY_OPTIONS)):
        given = [n for n in names if getattr(args, n) is not None]
        if given and args.executor != executor:
            raise UsageError(f"--{given[0].replace('_', '-')} needs --executor {executor}")
    for extra in args.slurm_extra or []:
        key, sep, _ = extra.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--slurm-extra {extra!r}: expected KEY=VALUE (an sbatch flag without its --)")
    package = {"slurm": "submitit", "ray": "ray"}.get(args.executor)
    if package and importlib.util.find_spec(package) is None:
        raise UsageError(
            f"--executor {args.executor}: {package} is not installed (pip install 'ntbench[{args.executor}]')"
        )
    if args.executor == "local":
        return
    if args.device not in ("auto", "cpu", "cuda"):
        raise UsageError(
            f"--device {args.device}: with --executor {args.executor} the scheduler picks the GPU; "
            "give auto, cuda or cpu"
        )
    if args.executor == "slurm":
        if args.device == "cuda" and not args.slurm_gpus:
            raise UsageError("--device cuda needs --slurm-gpus 1")
        from submitit import SlurmExecutor

        if (args.slurm_cluster or "slurm") == "slurm" and SlurmExecutor.affinity() <= 0:
            raise UsageError(
                "--executor slurm: no SLURM on this machine (srun not found); "
                "--slurm-cluster local runs the jobs as local processes"
            )


def slurm_parameters(args: argparse.Namespace) -> dict:
    """submitit ``AutoExecutor.update_parameters`` arguments from the --slurm-* options."""
    extra = dict(e.partition("=")[::2] for e in args.slurm_extra or [])
    return {
        "name": "ntbench",
        "timeout_min": args.slurm_time or SLURM_TIME_MIN,
        "gpus_per_node": args.slurm_gpus or None,
        "cpus_per_task": args.slurm_cpus,
        "slurm_partition": args.slurm_partition,
        "slurm_array_parallelism": args.slurm_array_parallelism,
        "slurm_additional_parameters": extra or None,
    }


def local_devices(device: torch.device, jobs: int) -> list[str]:
    """One device per worker: round-robin over the visible GPUs for ``cuda``, else ``device`` for all."""
    if device.type == "cuda" and device.index is None:
        return [f"cuda:{i % torch.cuda.device_count()}" for i in range(jobs)]
    return [str(device)] * jobs


def make_executor(args: argparse.Namespace) -> Executor:
    if args.executor == "slurm":
        device = "cuda" if args.slurm_gpus and args.device != "cpu" else "cpu"
        return Slurm(
            (args.slurm_folder or args.out / "slurm").resolve(),
            args.slurm_cluster or "slurm",
            slurm_parameters(args),
            device,
            args.slurm_cpus or 0,
        )
    if args.executor == "ray":
        return RayTasks(args.ray_address, args.jobs, args.ray_cpus or 1, args.device)
    device = resolve_device(args.device)
    if args.jobs == 1:
        return InProcess(str(device))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return LocalPool(local_devices(device, args.jobs), max(1, cores // args.jobs))


def will_run(state: str | None, args: argparse.Namespace) -> bool:
    """Absent and lost cells run; failed ones only with --retry-failed; every cell with --force."""
    return args.force or state in (None, "lost") or (state == "failed" and args.retry_failed)


def dry_run(cells: list[Cell], store: Store, args: argparse.Namespace) -> str:
    """The grid's cells with their state, and an estimate of the work left."""
    states = {c.key: store.state(c.key) for c in cells}
    todo = [c for c in cells if will_run(states[c.key], args)]
    rerun = {c.key for c in todo}
    lines = [f"{'key':<16}  {'method':<12} {'transfer':<28} {'seed':>4} {'k':>3}  state"]
    for c in cells:
        state = states[c.key]
        label = "todo" if state is None else f"{state} ({'rerun' if c.key in rerun else 'kept'})"
        lines.append(f"{c.key:<16}  {c.method:<12} {c.transfer:<28} {c.seed:>4} {c.few_shot:>3}  {label}")
    count = {s: sum(v == s for v in states.values()) for s in ("ok", "failed", "lost")}
    lines.append(
        f"{len(cells)} cells: {count['ok']} done, {count['failed']} failed, {count['lost']} lost "
        f"(worker died), {len(todo)} to run. A failed cell counts as done and is not rerun unless "
        "--retry-failed; a lost cell is rerun."
    )
    sources = {source_key(c): c.budget.source_steps for c in todo if c.source_task}
    sources = {k: n for k, n in sources.items() if not (args.cache_dir / "sources" / f"{k}.pt").exists()}
    steps = sum(c.budget.target_steps for c in todo) + sum(sources.values())
    rate, basis = seconds_per_step(store, cells)
    left = (
        f"about {steps * rate / 3600:.2f} h of single-device time at {rate:.3f} s/step ({basis})"
        if rate
        else "time unknown (no finished cell to measure)"
    )
    lines.append(f"work left: {len(todo)} cell(s) + {len(sources)} source model(s) to train = {steps} steps; {left}")
    return "\n".join(lines)


def seconds_per_step(store: Store, cells: list[Cell]) -> tuple[float | None, str]:
    """Wall seconds per target step of finished ok cells: this grid's, else any with its dataset and backbone."""
    rows = store.read()
    rows = rows[rows["status"] == "ok"].drop_duplicates("cell_key")
    for pick, basis in (
        (rows["cell_key"].isin({c.key for c in cells}), "this grid"),
        (
            rows["dataset"].isin({c.dataset for c in cells}) & rows["backbone"].isin({c.backbone for c in cells}),
            "same dataset and backbone",
        ),
    ):
        done = rows[pick]
        if len(done) and done["target_steps"].sum() > 0:
            rate = float(done["wall_s"].sum() / done["target_steps"].sum())
            return rate, f"measured on {len(done)} finished cell(s) of {basis}, evaluation included"
    return None, ""


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
    adapter = cls(args.data_root or cls.default_root(args.cache_dir), **dataset_options(args.dataset_option))
    return "\n".join(
        [
            f"dataset {name} at {adapter.root}",
            f"groups: {', '.join(adapter.groups()) or '(none)'}",
            f"modalities: {', '.join(adapter.modalities())}",
            f"regions: {', '.join(f'{r}={sorted(v)}' for r, v in adapter.regions.items())}",
            f"labelled subjects: {len(adapter.labelled_subjects())} of {len(adapter.subjects())}",
        ]
    )


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
        check_executor_options(args)
        suite = apply_overrides(load_suite(args.suite), args)
        if suite.needs_data_root and args.data_root is None:
            raise UsageError(f"--suite {suite.name} runs on real data: give --data-root")
        params = method_params(suite.methods, args.param)
        store = Store(args.out)
        executor = None if args.dry_run else make_executor(args)
        if not args.dry_run:
            store.check_writable()
        data = open_dataset(
            suite.dataset,
            args.data_root,
            suite.dataset_options,
            args.cache_dir,
            suite.budget.size,
            suite.split_seed,
            args.skip_bad_subjects,
            args.jobs,
        )
        if data.skipped:
            print(
                f"skipped {len(data.skipped)} bad subject(s): {', '.join(s for s, _ in data.skipped)}", file=sys.stderr
            )
        cells = build_cells(suite, params, data, args.checkpoint)
        if args.dry_run:
            print(dry_run(cells, store, args))
            return 0
    except (UsageError, SuiteError, DataError, StoreError, UnknownNameError, MethodConfigError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    store.clean_stale()
    todo = [c for c in cells if will_run(store.state(c.key), args)]
    print(
        f"{len(cells)} cells, {len(cells) - len(todo)} already done, running {len(todo)} with {executor.label}",
        file=sys.stderr,
    )
    root = args.data_root or DATASETS.get(suite.dataset).default_root(args.cache_dir)
    job = Job(
        publish(data, root, suite.dataset_options, args.cache_dir), store.root.resolve(), args.cache_dir.resolve()
    )
    try:
        tally = run_grid(executor, todo, job, data.adapter.has_groups, sys.stderr) if todo else Tally()
    except ExecutorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished cells are kept; rerun the same command to resume", file=sys.stderr)
        return 130
    tally.skipped = len(cells) - len(todo)
    print(summary_table(store.read(), cells))
    if args.csv:
        store.export_csv(args.csv)
    print(tally.line(executor.label))
    return 0


if __name__ == "__main__":
    sys.exit(main())
