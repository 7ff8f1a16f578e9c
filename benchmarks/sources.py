"""Source pretraining, cached as one checkpoint per (source task, backbone, seed, budget)."""

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

from benchmarks import progress
from benchmarks.backbones import SegModel, build_backbone, is_nnunet_checkpoint
from benchmarks.config import KEY_STABLE_DEFAULTS, Cell
from benchmarks.core.files import atomic_write
from benchmarks.data import OpenDataset
from benchmarks.train import TRAINER_VERSION, seed_all, train
from datasets.base import Task
from datasets.slices import SliceDataset


def source_key(cell: Cell) -> str:
    """Hash of what determines the source model (not the method, target or few-shot k).

    Source models are trained by plain training (``benchmarks.train``): the trainer's version enters from 2 on.
    """
    b = asdict(cell.budget)
    b.pop("target_steps")
    for name, default in KEY_STABLE_DEFAULTS["budget"].items():  # added fields at their default: same key
        if b.get(name, default) == default:
            b.pop(name, None)
    b.pop("target_lr", None)  # a tuned target learning rate never changes the source model
    parts = [
        cell.dataset,
        cell.dataset_options,
        cell.source_task,
        cell.backbone,
        cell.seed,
        cell.split_seed,
        b,
        cell.fingerprint,
    ]
    if cell.threads != KEY_STABLE_DEFAULTS["cell"]["threads"]:  # CPU weights depend on it bitwise
        parts.append({"threads": cell.threads})
    if TRAINER_VERSION != KEY_STABLE_DEFAULTS["cell"]["trainer_version"]:
        parts.append({"trainer_version": TRAINER_VERSION})
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


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
    path = cache_dir / "sources" / f"{source_key(cell)}.pt"
    task = task or data.task(cell.source_task)  # the cell's parsed source task, when the caller has it
    with file_lock(path.with_suffix(".lock")) as locked:
        if not path.exists():
            for stale in path.parent.glob(f".{path.stem}-*.tmp") if locked else []:  # held: its writer is dead
                stale.unlink()
            seed_all(cell.seed, "source-init")
            model = build_backbone(cell.backbone, 1, task.num_classes, cell.checkpoint or None, size=cell.budget.size)
            slices = data.slices(task, data.task_ids(task, "train"))
            progress.begin("source training", cell.budget.source_steps)
            train(
                model,
                SliceDataset(slices, augment=cell.budget.augment, seed=cell.seed),
                cell.budget.source_steps,
                cell.budget,
                device,
                seed=cell.seed,
                desc=f"source {task}",
            )
            with atomic_write(path, prefix=f".{path.stem}-") as fh:  # never visible half-written
                torch.save({"model": model.cpu().state_dict(), "num_classes": task.num_classes}, fh)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = build_backbone(cell.backbone, 1, state["num_classes"], size=cell.budget.size)
    model.load_state_dict(state["model"])
    return model, path
