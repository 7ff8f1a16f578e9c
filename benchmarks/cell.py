"""One cell = one reproducible unit of work: fine-tune, evaluate, write its rows."""

from __future__ import annotations

import copy
import json
import subprocess
import time
import traceback
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd
import torch

from benchmarks import report
from benchmarks.backbones import build_backbone
from benchmarks.config import Cell, transfer_type
from benchmarks.core.settings import stored_settings
from benchmarks.data import OpenDataset
from benchmarks.metrics import dice_hd95
from benchmarks.sources import source_model
from benchmarks.store import Store
from benchmarks.threads import wait_policy
from benchmarks.train import predict, seed_all, train
from datasets.base import DataError, Task
from datasets.core.files import atomic_write
from datasets.slices import SliceDataset, assemble_volume
from methods.base import METHODS, Method, RunContext
from methods.model import SegModel


@lru_cache(maxsize=1)
def code_version() -> str:
    """Git commit (with -dirty) of the checkout, else the installed package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=10"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return version("ntbench")
    except PackageNotFoundError:
        return "unknown"


class CellSkipped(Exception):
    """The cell's method declines its backbone or target task (``Method.check``); the message is the reason."""


@dataclass(frozen=True)
class CellData:
    """A cell's tasks and subjects, parsed and looked up once, then used by every stage of the cell."""

    source: Task | None  # None for methods trained from random init
    target: Task
    train_ids: list[str]  # the seed's few-shot draw of target training subjects
    eval_ids: list[str]  # the target task's subjects of the cell's split (test, or val for a tuning trial)


def resolve(cell: Cell, data: OpenDataset) -> CellData:
    """Parse the cell's task strings and draw its subjects (docs/design.md §A cell's life)."""
    target = data.task(cell.target_task)
    eval_ids = data.task_ids(target, cell.split)
    if not eval_ids:
        raise DataError(f"task {target}: no {cell.split} subjects")
    source = data.task(cell.source_task) if cell.source_task else None
    return CellData(source, target, data.train_ids(target, cell.few_shot, cell.seed), eval_ids)


def _evaluate(model: torch.nn.Module, data: OpenDataset, resolved: CellData, device: torch.device) -> list[dict]:
    """Dice/HD95 per subject of the cell's split and region, on the re-assembled 3D volume."""
    rows = []
    report.begin("prediction", len(resolved.eval_ids))
    for sid in resolved.eval_ids:
        slices = data.slices(resolved.target, [sid])
        pred = assemble_volume(slices, sid, predict(model, slices, device))
        truth = assemble_volume(slices, sid, slices.labels)
        for cls, region in enumerate(resolved.target.regions, start=1):
            dice, hd = dice_hd95(pred == cls, truth == cls, slices.spacing[sid])
            rows.append({"subject_id": sid, "region": region, "dice": dice, "hd95": hd})
        report.tick()
    return rows


def fine_tune(
    cell: Cell, data: OpenDataset, cache_dir: Path, device: torch.device, resolved: CellData | None = None
) -> tuple[SegModel, SegModel | None, Method]:
    """Build, prepare and train the cell's target model: (target, frozen source or None, method).

    Raises ``CellSkipped`` with the method's reason, before anything is trained, when ``Method.check`` declines
    the cell's backbone (built bare, without weights) and target task.
    """
    resolved = resolved or resolve(cell, data)
    method = METHODS.get(cell.method)(**cell.method_params)
    task = resolved.target
    reason = method.check(build_backbone(cell.backbone, 1, task.num_classes, size=cell.budget.size), task)
    if reason:
        raise CellSkipped(reason)
    train_set = SliceDataset(data.slices(task, resolved.train_ids), augment=cell.budget.augment, seed=cell.seed)
    source = None
    if method.init == "source":
        source, _ = source_model(cell, data, cache_dir, device, resolved.source)
    # Seed after the source exists: whether this cell trained it or loaded it must not change the result.
    seed_all(cell.seed, "target-init")
    if source is not None:
        target = copy.deepcopy(source)
        if target.num_classes != task.num_classes:
            target.reset_head(task.num_classes)
        source.to(device).eval().requires_grad_(False)
    else:
        target = build_backbone(
            cell.backbone, 1, task.num_classes, cell.checkpoint or None, size=cell.budget.size, scratch=True
        )
    target.to(device)
    risk = data.risk(resolved.source, task, resolved.train_ids) if method.needs_risk_maps() else None
    run = RunContext(source, target, train_set, device, cell.budget.target_steps, cell.seed, cache_dir, risk)
    report.begin("fine-tuning", cell.budget.target_steps)  # a method's preparation (TRM's maps) included
    method.prepare(run)
    train(
        target,
        train_set,
        cell.budget.target_steps,
        replace(cell.budget, lr=cell.budget.target_lr or cell.budget.lr),
        device,
        seed=cell.seed,
        method=method,
        desc=f"{cell.method} {cell.transfer}",
    )
    return target, source, method


def model_path(cache_dir: Path, cell: Cell) -> Path:
    """Where a cell's fine-tuned weights are kept (``--save-models``; ``benchmarks.riskmap`` reads them)."""
    return Path(cache_dir) / "targets" / f"{cell.key}.pt"


def save_model(model: SegModel, path: Path) -> None:
    """A fine-tuned model's weights (copied to the CPU) and class count, written atomically."""
    state = {name: value.detach().cpu() for name, value in model.state_dict().items()}
    with atomic_write(path) as fh:
        torch.save({"model": state, "num_classes": model.num_classes}, fh)


def _fine_tune(
    cell: Cell, data: OpenDataset, cache_dir: Path, device: torch.device, keep_model: bool
) -> tuple[list[dict], dict]:
    resolved = resolve(cell, data)
    target, _, method = fine_tune(cell, data, cache_dir, device, resolved)
    if keep_model:
        save_model(target, model_path(cache_dir, cell))
    return _evaluate(target, data, resolved, device), method.result_columns()


def cell_frame(
    cell: Cell, has_groups: bool, rows: list[dict], extra: dict, status: str, error: str, device: str, wall_s: float
) -> pd.DataFrame:
    """The store rows of one cell: its config and provenance columns joined to each result row."""
    common = {
        "cell_key": cell.key,
        "suite": cell.suite,
        "dataset": cell.dataset,
        "transfer": cell.transfer,
        "source_task": cell.source_task,
        "target_task": cell.target_task,
        "transfer_type": transfer_type(cell.source_task, cell.target_task, has_groups),
        "method": cell.method,
        "method_params": json.dumps(cell.method_params, sort_keys=True),
        "backbone": cell.backbone,
        "seed": cell.seed,
        "few_shot": cell.few_shot,
        **setting_columns(cell),
        "status": status,
        "error": error,
        **extra,
        "code_version": code_version(),
        "torch_version": torch.__version__,
        "device": device,
        "wall_s": round(wall_s, 3),
        "created_at": datetime.now(timezone.utc).isoformat(),
    }
    return pd.DataFrame([{**common, **row} for row in rows])


def setting_columns(cell: Cell) -> dict:
    """The store's setting and tuning columns of a cell (``benchmarks.core.settings``), in write order."""
    process = {"omp_wait": wait_policy()}  # how this process runs cells (its environment), not the cell's
    return {s.name: process[s.name] if s.holder == "process" else s.column_value(cell) for s in stored_settings()}


def failed_frame(
    cell: Cell, has_groups: bool, error: str, device: str, wall_s: float = 0.0, status: str = "failed"
) -> pd.DataFrame:
    """The single ``failed`` (or ``skipped``, with the method's reason) row of a cell that produced no results."""
    empty = {"subject_id": "", "region": "", "dice": float("nan"), "hd95": float("nan")}
    return cell_frame(cell, has_groups, [empty], {}, status, error, device, wall_s)


def run_cell(
    cell: Cell, data: OpenDataset, store: Store, cache_dir: Path, device: torch.device, keep_model: bool = False
) -> pd.DataFrame:
    """Run one cell and write its rows; a failure is stored as one ``failed`` row with its traceback, a cell its
    method declines (``CellSkipped``) as one ``skipped`` row with the reason. ``keep_model`` (``--save-models``)
    also saves the fine-tuned weights to ``model_path``.

    Failures include a diverged loss (``TrainingDiverged``) and running out of memory
    (``torch.OutOfMemoryError``): the reason is the first line of the ``error`` column. Torch runs
    ``cell.threads`` intra-op threads.
    """
    start = time.time()
    has_groups = data.adapter.has_groups
    torch.set_num_threads(cell.threads)  # part of the key: CPU numbers depend on it bitwise
    try:
        rows, extra = _fine_tune(cell, data, cache_dir, device, keep_model)
        frame = cell_frame(cell, has_groups, rows, extra, "ok", "", str(device), time.time() - start)
    except (KeyboardInterrupt, SystemExit):
        raise
    except CellSkipped as exc:
        frame = failed_frame(cell, has_groups, str(exc), str(device), time.time() - start, status="skipped")
    except Exception as exc:  # noqa: BLE001 - any failure of a cell is recorded, the grid goes on
        error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"
        frame = failed_frame(cell, has_groups, error, str(device), time.time() - start)
    if frame["status"].iloc[0] == "failed" and device.type == "cuda":
        torch.cuda.empty_cache()  # give an out-of-memory cell's blocks back before the next cell
    store.write(cell.key, frame)
    return frame
