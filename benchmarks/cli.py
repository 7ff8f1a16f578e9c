"""``python -m benchmarks.run``: run a suite (or one ad-hoc transfer) and print a summary.

Cells run in this process, in local worker processes, as a SLURM job array or as Ray tasks
(--executor); every executor writes the same store, and rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.core.device import DeviceError, resolve_device
from benchmarks.core.options import (
    DEFAULT_CACHE,
    OneLineParser,
    UsageError,
    add_margin,
    add_split_fractions,
    check_folder,
    check_minimums,
    flag,
)
from benchmarks.grid import apply_settings, dataset_options
from benchmarks.threads import configure_openmp

if TYPE_CHECKING:  # heavy (torch, MONAI): imported in main only once the options are valid
    import torch

    from benchmarks.config import Cell
    from benchmarks.executors import Executor
    from benchmarks.store import Store
    from benchmarks.suite import Suite

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
CALIBRATE_FROM_STEPS = 200  # a run this long gets a calibrated time estimate at its start (about 10 steps)

# Smallest allowed value of every numeric option (argparse dest -> minimum); list options are checked
# element-wise. A new numeric option is validated by adding its entry here.
MINIMUM: dict[str, int | float] = {
    "seeds": 0,
    "source_seed": -1,
    "few_shot": 0,
    "steps": 1,
    "tune": 1,
    "jobs": 1,
    "cells_per_device": 1,
    "threads": 1,
    "slurm_time": 1,
    "slurm_gpus": 0,
    "slurm_cpus": 1,
    "slurm_array_parallelism": 1,
    "ray_cpus": 1,
}


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m benchmarks.run", description=__doc__)
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
    p.add_argument("--seeds", type=int, nargs="+", help="seeds, >= 0 (overrides the suite's)")
    p.add_argument(
        "--source-seed",
        type=int,
        metavar="N",
        help="fine-tune one source model (that of seed N) in every seed; -1: one source model per seed "
        "(default: the suite's, else -1)",
    )
    p.add_argument("--few-shot", type=int, nargs="+", metavar="K", help="target training subjects; 0 = all")
    add_split_fractions(p, "the suite's, else 0.6 0.2 0.2")
    p.add_argument("--steps", type=int, help="override every phase's step budget (smoke runs)")
    p.add_argument(
        "--tune",
        type=int,
        metavar="N",
        help="tune every method with N trials on the validation subjects, then run the best on the test seeds",
    )
    p.add_argument(
        "--tune-sampler", choices=("tpe", "random"), help="tuning sampler (default: the suite's, else seeded TPE)"
    )
    p.add_argument("--out", type=Path, default=Path("results"), help="results folder (default: results)")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help=f"cache (default: {DEFAULT_CACHE})")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument(
        "--jobs",
        type=int,
        help="cells at once on this machine (--executor local worker processes, or the CPUs of a "
        "local Ray cluster) and preprocessing processes (default: on the CPU, the CPUs this job was given "
        "divided by --threads; on a GPU 1; 1 runs the cells in this process)",
    )
    p.add_argument(
        "--cells-per-device",
        type=int,
        default=1,
        metavar="N",
        help="--executor local: N worker processes per device (each visible GPU with --device cuda), "
        "each running its own cells; numbers as with one cell alone (default: 1; see docs/scaling.md)",
    )
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch threads per cell (default: --slurm-cpus or --ray-cpus with those executors, else "
        "OMP_NUM_THREADS, else 1); a setting: CPU numbers depend on it, so it enters the cell key when not 1",
    )
    p.add_argument(
        "--amp",
        choices=("off", "bf16"),
        help="numeric mode of the training step: bf16 autocast (channels-last on CUDA); a different setting "
        "(default: the suite's, off = float32)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="torch.compile the training forward (a different setting: fused kernels round differently)",
    )
    p.add_argument("--skip-bad-subjects", action="store_true", help="skip unreadable subjects instead of failing")
    p.add_argument("--force", action="store_true", help="recompute finished cells")
    p.add_argument(
        "--save-models",
        action="store_true",
        help="keep each cell's fine-tuned weights in CACHE/targets/<cell key>.pt (python -m benchmarks.riskmap "
        "reuses them); finished cells are not rerun for it (--force)",
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="rerun failed cells (by default a failed cell counts as done); ok cells are untouched",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list the grid's cells, which are done or failed, and the work left; run and write nothing",
    )
    p.add_argument(
        "--executor",
        choices=("local", "slurm", "ray"),
        default="local",
        help="where the cells run: local processes, a SLURM job array (submitit) or Ray tasks",
    )
    p.add_argument("--csv", type=Path, help="also export the whole store as CSV to this path")
    add_margin(p)  # the summary's verdicts, as the leaderboard's
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
    ray.add_argument(
        "--ray-cpus",
        type=int,
        metavar="N",
        help="CPUs per cell task (default: 1); also its torch threads unless --threads",
    )
    return p


def check_options(args: argparse.Namespace) -> None:
    """Validate every option that needs no data, before anything heavy is imported, opened or written."""
    check_minimums(args, MINIMUM)
    if (args.source is None) != (args.target is None):
        raise UsageError("--source and --target go together")
    dataset_options(args.dataset_option)
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise UsageError(f"--checkpoint {args.checkpoint}: no such file")
    if args.data_root is not None and not args.data_root.is_dir():
        raise UsageError(f"--data-root {args.data_root}: no such folder")
    check_folder("--out", args.out)
    check_folder("--cache-dir", args.cache_dir)
    if args.csv is not None:
        if args.csv.is_dir():
            raise UsageError(f"--csv {args.csv}: is a folder; give a file path")
        if not args.csv.parent.is_dir():
            raise UsageError(f"--csv {args.csv}: folder {args.csv.parent} does not exist")
    check_executor_options(args)


def check_executor_options(args: argparse.Namespace) -> None:
    """Validate executor options before anything is opened or written."""
    for executor, names in (("slurm", SLURM_OPTIONS), ("ray", RAY_OPTIONS)):
        given = [n for n in names if getattr(args, n) is not None]
        if given and args.executor != executor:
            raise UsageError(f"{flag(given[0])} needs --executor {executor}")
    for extra in args.slurm_extra or []:
        key, sep, _ = extra.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--slurm-extra {extra!r}: expected KEY=VALUE (an sbatch flag without its --)")
    package = {"slurm": "submitit", "ray": "ray"}.get(args.executor)
    if package and importlib.util.find_spec(package) is None:
        raise UsageError(
            f"--executor {args.executor}: {package} is not installed (pip install 'ntbench[{args.executor}]')"
        )
    if args.cells_per_device > 1 and (args.executor != "local" or (args.jobs or 1) > 1):
        raise UsageError(
            "--cells-per-device runs local worker processes: give it with --executor local, without --jobs"
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


def apply_overrides(suite: Suite, args: argparse.Namespace) -> Suite:
    """The suite with the run's options: its identity ones here, every setting's through ``apply_settings``."""
    changes: dict = {}
    if args.dataset:
        changes["dataset"] = args.dataset
    if args.source:
        changes["transfers"] = [(args.source, args.target)]
    if args.method:
        changes["methods"] = list(dict.fromkeys(args.method))
    for opt in ("backbone", "seeds", "few_shot"):
        if getattr(args, opt) is not None:
            changes[opt] = getattr(args, opt)
    return apply_settings(replace(suite, **changes), args)  # --steps (a smoke run), --amp, --split-fractions, ...


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
    import torch

    if device.type == "cuda" and device.index is None:
        return [f"cuda:{i % torch.cuda.device_count()}" for i in range(jobs)]
    return [str(device)] * jobs


def cell_threads(args: argparse.Namespace) -> int:
    """Torch threads of every cell of the run: --threads, else the CPUs of a SLURM or Ray task (--slurm-cpus,
    --ray-cpus), else OMP_NUM_THREADS, else 1 (``benchmarks.threads``)."""
    from benchmarks.threads import threads_per_cell

    return threads_per_cell(args.threads or {"slurm": args.slurm_cpus, "ray": args.ray_cpus}.get(args.executor) or 0)


def workers_find(suite: Suite) -> bool:
    """Whether a spawned worker finds the suite's methods, backbone and dataset: built in, or an entry-point plugin.

    A name registered in this process only (a notebook, a test) is not found there: such a grid runs here.
    """
    from importlib.metadata import entry_points

    from benchmarks.backbones import BACKBONES
    from datasets.base import DATASETS
    from methods import METHODS

    for registry, names in ((METHODS, suite.methods), (BACKBONES, [suite.backbone]), (DATASETS, [suite.dataset])):
        plugins = {ep.module for ep in entry_points(group=registry.entry_point_group)}
        for name in names:
            module = registry.get(name).__module__
            if module.split(".")[0] not in ("benchmarks", "datasets", "methods") and module not in plugins:
                return False
    return True


def jobs(args: argparse.Namespace, suite: Suite | None = None) -> int:
    """--jobs, else for local CPU cells and Ray's local cluster the CPUs this job was given, ``cell_threads`` per
    cell (cells side by side), else 1 (a GPU, --cells-per-device, SLURM, a ``suite`` workers cannot run)."""
    from benchmarks.threads import default_jobs

    if args.jobs:
        return args.jobs
    if args.executor == "ray":
        return default_jobs(cell_threads(args))
    local_cpu = args.executor == "local" and args.cells_per_device == 1 and resolve_device(args.device).type == "cpu"
    return default_jobs(cell_threads(args)) if local_cpu and (suite is None or workers_find(suite)) else 1


def make_executor(args: argparse.Namespace) -> Executor:
    from benchmarks.executors import InProcess, LocalPool, RayTasks, Slurm, pool_devices

    if args.executor == "slurm":
        device = "cuda" if args.slurm_gpus and args.device != "cpu" else "cpu"
        return Slurm(
            (args.slurm_folder or args.out / "slurm").resolve(),
            args.slurm_cluster or "slurm",
            slurm_parameters(args),
            device,
        )
    if args.executor == "ray":
        return RayTasks(args.ray_address, jobs(args), args.ray_cpus or 1, args.device)
    device, n = resolve_device(args.device), jobs(args)
    if n == 1 and args.cells_per_device == 1:
        return InProcess(str(device))
    devices = pool_devices(device, args.cells_per_device) if args.cells_per_device > 1 else local_devices(device, n)
    return LocalPool(devices, cell_threads(args))


def start_estimate(args: argparse.Namespace, suite: Suite, todo: list, data: Any) -> float | None:
    """Seconds the local run should take (``plan.estimate``, calibrated here), printed; None for short runs.

    Calibrating costs about 10 training steps, so it is done only when the run has at least
    ``CALIBRATE_FROM_STEPS``; remote executors (SLURM, Ray) run on other hardware and get none.
    """
    from benchmarks.plan import calibrate, estimate, sources_to_train

    sources = sum(sources_to_train(todo, args.cache_dir).values())
    if args.executor != "local" or sources + sum(c.budget.target_steps for c in todo) < CALIBRATE_FROM_STEPS:
        return None
    classes = max(data.task(c.target_task).num_classes for c in todo)
    seconds, text = estimate(
        todo, sources, data, calibrate(suite.backbone, suite.budget, classes, resolve_device(args.device))
    )
    workers = args.jobs * args.cells_per_device
    share = f"; {workers} cells at once: about {seconds / workers / 60:.1f} min of wall time" if workers > 1 else ""
    print(f"estimate: {text}{share}", file=sys.stderr, flush=True)
    return seconds / workers


def repair_store(store: Store, cells: list[Cell], dry_run: bool) -> None:
    """One line per damaged cell file, moved aside (``Store.set_aside``), and per cell of the grid whose rows
    were computed with another thread count, moved to that count's key (``Store.rekey``): either cell is then
    not done. A dry run only says what the run will do."""
    will = "the run will move" if dry_run else "moved"
    for path, why in store.damaged():
        done = "the run will move it aside" if dry_run else f"moved aside to {store.set_aside(path).name}"
        print(f"damaged cell file {path}: {why}; {done}, its cell counts as not done", file=sys.stderr)
    for cell in cells:
        recorded = store.recorded_threads(cell.key)
        if recorded in (None, cell.threads):
            continue
        other = replace(cell, threads=recorded).key
        where = other if dry_run else store.rekey(cell.key, other).name
        print(
            f"cell {cell.key} holds rows computed with {recorded} torch threads: {will} them to {where} "
            f"(the key of --threads {recorded}) and recompute it with {cell.threads}",
            file=sys.stderr,
        )


def list_methods() -> str:
    """Every method and its hyperparameters, from declarations read without torch (``methods.declarations``)."""
    from benchmarks.tune import BUDGET_SPACE
    from methods.declarations import declarations

    lines = []
    for name, declared in sorted(declarations().items()):
        lines.append(f"{name}: {declared.summary}")
        for key, hp in declared.hparams.items():
            choices = f" {{{', '.join(map(str, hp.choices))}}}" if hp.choices else ""
            space = f"  [tune: {hp.space}]" if hp.space else ""
            lines.append(f"    {key} = {hp.default!r}{choices}  {hp.help}{space}")
    budget = ", ".join(f"{k} {s}" for k, s in BUDGET_SPACE.items())
    lines.append(f"--tune also searches, for every method: {budget} (the budget's learning rate)")
    return "\n".join(lines)


def list_datasets() -> str:
    from datasets import DATASETS

    lines = []
    for name in DATASETS.names():
        doc = (DATASETS.get(name).__doc__ or "").strip().splitlines()
        lines.append(f"{name}: {doc[0]}" if doc else name)
    return "\n".join(lines)


def list_tasks(name: str, args: argparse.Namespace) -> str:
    from datasets import DATASETS

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
    configure_openmp()  # the runner's start-up, before torch loads (benchmarks.threads)
    args = build_parser().parse_args(argv)
    try:
        check_options(args)
        if args.list_methods:
            print(list_methods())
            return 0
        if args.list_datasets:
            print(list_datasets())
            return 0
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Everything after the option checks: here torch, MONAI and the dataset adapters are imported.

    The dataset is opened and split once (``plan.peek_dataset``, read-only) and the grid built and validated
    against it once, before anything is generated, preprocessed or written; ``--dry-run`` stops there. The run
    then preprocesses with that adapter and keeps that split (``data.open_dataset``'s ``plan``).
    """
    import torch

    from benchmarks.data import open_suite_data
    from benchmarks.executors import ExecutorError, Job, Tally, publish, run_grid
    from benchmarks.grid import build_cells, grid_cells, method_params
    from benchmarks.plan import calibrate, dry_run, peek_suite_data, will_run
    from benchmarks.store import Store, StoreError
    from benchmarks.suite import SuiteError, load_suite
    from benchmarks.summary import run_summary
    from benchmarks.tune import TuneError, TuneInterrupted, describe, plan_lines, planned_test_cells, tune, tune_config
    from datasets.base import DATASETS, DataError, Task
    from datasets.core.registry import UnknownNameError
    from datasets.generated import NotGenerated
    from methods import MethodConfigError
    from methods.model import BackboneError

    try:
        if args.list_tasks:
            print(list_tasks(args.list_tasks, args))
            return 0
        suite = apply_overrides(load_suite(args.suite), args)
        if suite.needs_data_root and args.data_root is None:
            raise UsageError(f"--suite {suite.name} runs on real data: give --data-root")
        params = method_params(suite.methods, args.param)
        tuning = tune_config(suite.tune, args.tune, args.tune_sampler)
        if tuning is not None:
            tuning.check(suite.seeds, suite.methods)
        threads, args.jobs = cell_threads(args), jobs(args, suite)
        torch.set_num_threads(threads)  # the cells' count, for the calibrated estimate and cells run here
        store = Store(args.out, threads)
        executor = make_executor(args) if not args.dry_run else None
        try:  # the dataset, opened once and split once, read-only: nothing generated, preprocessed or written
            plan, missing = peek_suite_data(suite, args.data_root, args.cache_dir), None
        except NotGenerated as exc:
            plan, missing = None, exc
        # The grid, built once: tasks, few-shot sizes and the checkpoint checked, its bytes read once.
        cells = build_cells(suite, params, plan, args.checkpoint, threads) if plan else None
        if args.dry_run:
            cells = grid_cells(suite, params, threads=threads) if cells is None else cells
            repair_store(store, cells, dry_run=True)
            if plan is None:
                print(
                    f"dataset {suite.dataset} is not generated yet ({missing.params.get('n_subjects', '?')} "
                    f"subjects go to {missing.root} on the first run): cell keys depend on its subjects, so "
                    "every cell is listed as todo; tasks and few-shot sizes are checked when it exists."
                )
            has_groups = DATASETS.get(suite.dataset).has_groups
            classes = max(Task.parse(t, has_groups).num_classes for _, t in suite.transfers)
            device = resolve_device(args.device)
            model = partial(calibrate, suite.backbone, suite.budget, classes, device)  # measured only if work is left
            if tuning is not None:  # replays the studies from the store; runs nothing
                studies, left = tune(cells, tuning, store, None)
                print("\n".join(plan_lines(studies, tuning, left)))
                cells = planned_test_cells(studies, tuning)
            print(dry_run(cells, store, args.cache_dir, plan, model, args.force, args.retry_failed))
            return 0
        data = open_suite_data(suite, args.data_root, args.cache_dir, args.skip_bad_subjects, args.jobs, plan)
        if data.skipped:
            print(
                f"skipped {len(data.skipped)} bad subject(s): {', '.join(s for s, _ in data.skipped)}", file=sys.stderr
            )
        if plan is None or data.split is not plan.split:  # generated just now, or a bad subject left the split
            cells = build_cells(suite, params, data, args.checkpoint, threads)
        store.check_writable()  # creates --out: only once the data have been read without error
    except (
        UsageError,
        DeviceError,
        SuiteError,
        DataError,
        StoreError,
        UnknownNameError,
        MethodConfigError,
        BackboneError,
        TuneError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    store.clean_stale()
    repair_store(store, cells, dry_run=False)
    root = args.data_root or DATASETS.get(suite.dataset).default_root(args.cache_dir)
    job = Job(
        publish(data, root, suite.dataset_options, args.cache_dir),
        store.root.resolve(),
        args.cache_dir.resolve(),
        args.save_models,
    )
    try:
        if tuning is not None:  # trials on the validation subjects, then the best configuration's test cells
            studies, _ = tune(
                cells,
                tuning,
                store,
                lambda trial_cells: run_grid(executor, trial_cells, job, data.adapter.has_groups, sys.stderr),
                lambda cell: will_run(store.state(cell.key), args.force, args.retry_failed),
            )
            print("\n".join(describe(s) for s in studies), file=sys.stderr)
            cells = [c for s in studies for c in s.test_cells()]
        todo = [c for c in cells if will_run(store.state(c.key), args.force, args.retry_failed)]
        print(
            f"{len(cells)} cells, {len(cells) - len(todo)} already done, running {len(todo)} with {executor.label}",
            file=sys.stderr,
        )
        expected = start_estimate(args, suite, todo, data) if tuning is None else None
        tally = run_grid(executor, todo, job, data.adapter.has_groups, sys.stderr, expected) if todo else Tally()
    except TuneInterrupted as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ExecutorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished cells are kept; rerun the same command to resume", file=sys.stderr)
        return 130
    tally.skipped = len(cells) - len(todo)
    print(run_summary(store.read(), cells, args.out, smoke=args.steps is not None, margin=args.margin))
    if args.csv:
        store.export_csv(args.csv)
    print(tally.line(executor.label))
    return 0
