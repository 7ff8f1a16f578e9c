"""Source pretraining, cached as one checkpoint per (source task, backbone, source model seed, budget)."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch

from benchmarks import report
from benchmarks.backbones import build_backbone, is_nnunet_checkpoint
from benchmarks.config import Cell
from benchmarks.core.settings import ADDED, SETTINGS, of
from benchmarks.data import OpenDataset
from benchmarks.train import seed_all, train
from datasets.base import Task
from datasets.core.files import atomic_write
from datasets.slices import SliceDataset
from methods.model import SegModel


def source_key(cell: Cell) -> str:
    """Hash of what determines the source model (not the method, target or few-shot k).

    The first release's fields in their first layout, then each setting that enters the source key
    (``Setting.source_key``) and was added later, only when not at its default: the trainer's version from 2 on,
    a thread count other than 1 (CPU weights depend on it bitwise), a numeric mode, a smoke run.
    """
    b = asdict(cell.budget)
    for s in of("budget"):
        if not s.source_key or (s.key == ADDED and b[s.attribute] == s.default):
            b.pop(s.attribute)
    parts = [
        cell.dataset,
        cell.dataset_options,
        cell.source_task,
        cell.backbone,
        cell.source_model_seed,  # a shared source model (source_seed) is the model of that seed
        cell.split_seed,
        b,
        cell.fingerprint,
    ]
    added = (s for s in SETTINGS if s.holder != "budget" and s.source_key and s.key == ADDED)
    parts += [{s.attribute: s.value(cell)} for s in added if s.value(cell) != s.default]
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def source_path(cache_dir: Path, cell: Cell) -> Path:
    """Where the cell's source model is cached."""
    return Path(cache_dir) / "sources" / f"{source_key(cell)}.pt"


@contextmanager
def file_lock(path: Path) -> Iterator[bool]:
    """Exclusive inter-process lock (flock) held for the ``with`` block; yields whether it is held.

    On a file system without flock (some NFS mounts) the block runs unlocked, with a warning:
    callers only lose time then, as they publish their results by atomic rename.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP):
                raise
            warnings.warn(f"{path}: no file locking here ({exc.strerror}); work may be done twice", stacklevel=3)
            yield False
        else:
            yield True  # closing the file releases the lock, also when the block raises


def source_model(
    cell: Cell, data: OpenDataset, cache_dir: Path, device: torch.device, task: Task | None = None
) -> tuple[SegModel, Path]:
    """The cell's pretrained source model, trained once under a lock and saved atomically.

    Workers needing the same checkpoint wait on its lock (``flock``: across processes, and across
    nodes on file systems that support it, e.g. NFSv4 or Lustre mounted with ``flock``); the first
    trains and writes it to a temporary name that is fsynced and renamed, so a reader never sees a
    half-written checkpoint and a trainer killed midway leaves only a temporary file, removed by
    the next trainer of that checkpoint. An nnU-Net checkpoint (``--checkpoint``) is the source model
    itself, with its own head: it is loaded, not pretrained (docs/design.md §nnU-Net).
    """
    if cell.checkpoint and is_nnunet_checkpoint(cell.checkpoint):
        return build_backbone(cell.backbone, 1, None, cell.checkpoint), Path(cell.checkpoint)
    path = source_path(cache_dir, cell)
    task = task or data.task(cell.source_task)  # the cell's parsed source task, when the caller has it
    with file_lock(path.with_suffix(".lock")) as locked:
        if not path.exists():
            for stale in path.parent.glob(f".{path.stem}-*.tmp") if locked else []:  # held: its writer is dead
                stale.unlink()
            seed_all(cell.source_model_seed, "source-init")
            model = build_backbone(cell.backbone, 1, task.num_classes, cell.checkpoint or None, size=cell.budget.size)
            slices = data.slices(task, data.task_ids(task, "train"))
            report.begin("source training", cell.budget.source_steps)
            train(
                model,
                SliceDataset(slices, augment=cell.budget.augment, seed=cell.source_model_seed),
                cell.budget.source_steps,
                cell.budget,
                device,
                seed=cell.source_model_seed,
                desc=f"source {task}",
            )
            with atomic_write(path, prefix=f".{path.stem}-") as fh:  # never visible half-written
                torch.save({"model": model.cpu().state_dict(), "num_classes": task.num_classes}, fh)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = build_backbone(cell.backbone, 1, state["num_classes"], size=cell.budget.size)
    model.load_state_dict(state["model"])
    return model, path
