"""Open a dataset once per run: adapter, preprocessed subjects, fixed split, task slices."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from datasets.base import DATASETS, DataError, DatasetAdapter, Task
from datasets.core.fractions import DEFAULT_SPLIT_FRACTIONS
from datasets.slices import SliceSet, load_maps, load_slices, preprocess_subjects
from datasets.splits import few_shot, split_subjects

if TYPE_CHECKING:
    from benchmarks.suite import Suite


@dataclass
class OpenDataset:
    """A dataset ready for cells: every labelled subject preprocessed once, split once."""

    name: str
    adapter: DatasetAdapter
    cached: dict[str, Path]
    split: dict[str, list[str]]
    skipped: list[tuple[str, str]]

    def task(self, text: str) -> Task:
        return self.adapter.parse_task(text)

    def task_ids(self, task: Task, part: str) -> list[str]:
        """Subjects of ``part`` (train/val/test) that belong to the task and were preprocessed."""
        members = {s.id for s in self.adapter.task_subjects(task)}
        return [i for i in self.split[part] if i in members and i in self.cached]

    def train_ids(self, task: Task, k: int, seed: int) -> list[str]:
        ids = self.task_ids(task, "train")
        if not ids:
            raise DataError(f"task {task}: no training subjects")
        return few_shot(ids, k, seed, task=str(task))

    def slices(self, task: Task, ids: list[str]) -> SliceSet:
        return load_slices(self.cached, ids, task, self.adapter.regions)

    def has_risk(self, source: Task, target: Task) -> bool:
        """Whether the dataset knows the ground-truth risk of this transfer (asked of one of its subjects)."""
        subjects = self.adapter.task_subjects(target)
        return bool(subjects) and self.adapter.risk_map(subjects[0], source, target) is not None

    def risk(self, source: Task, target: Task, ids: list[str]) -> np.ndarray | None:
        """Ground-truth risk maps (N, H, W) aligned with ``slices(target, ids)``; None where the dataset has none."""
        subjects = {s.id: s for s in self.adapter.subjects()}
        files = {sid: self.adapter.risk_map(subjects[sid], source, target) for sid in ids}
        if any(path is None for path in files.values()):
            return None
        return load_maps(self.cached, files)


def stratified_split(
    adapter: DatasetAdapter, ids: list[str], seed: int, fractions: tuple[float, float, float] = DEFAULT_SPLIT_FRACTIONS
) -> dict[str, list[str]]:
    """Split each group separately (train, val, test ``fractions``), so within-group tasks get test subjects too.

    Groups with fewer than 3 subjects cannot be split and go wholly to training.
    """
    group_of = {s.id: s.group for s in adapter.subjects()}
    split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for group in sorted({group_of[i] for i in ids}):
        members = [i for i in ids if group_of[i] == group]
        parts = split_subjects(members, seed, fractions) if len(members) >= 3 else {"train": members}
        for name, part in parts.items():
            split[name] += part
    return {name: sorted(part) for name, part in split.items()}


def open_dataset(
    name: str,
    data_root: Path | None,
    options: dict[str, Any],
    cache_dir: Path,
    size: int,
    split_seed: int,
    split_fractions: tuple[float, float, float] = DEFAULT_SPLIT_FRACTIONS,
    skip_bad: bool = False,
    jobs: int = 1,
    plan: OpenDataset | None = None,
) -> OpenDataset:
    """Adapter -> preprocessed subjects (cached) -> subject-level split shared by every task.

    ``plan`` is this dataset as ``plan.peek_dataset`` saw it before the run wrote anything: its adapter is used
    and its split kept (unless a subject failed to preprocess), so that a run opens and splits the dataset once.
    """
    if plan is None:
        cls = DATASETS.get(name)
        adapter = cls(Path(data_root) if data_root else cls.default_root(cache_dir), **options)
    else:
        adapter = plan.adapter
    subjects = adapter.labelled_subjects()
    if not subjects:
        raise DataError(f"--data-root {adapter.root}: no labelled subjects found for dataset {name!r}")
    cached = preprocess_subjects(adapter, subjects, cache_dir, size=(size, size), jobs=jobs, skip_bad=skip_bad)
    if plan is not None and set(cached) == set(plan.cached):
        split = plan.split
    else:
        split = stratified_split(adapter, sorted(cached), split_seed, split_fractions)
    return OpenDataset(name, adapter, dict(cached), split, sorted(cached.bad.items()))


def open_suite_data(
    suite: Suite,
    data_root: Path | None,
    cache_dir: Path,
    skip_bad: bool = False,
    jobs: int = 1,
    plan: OpenDataset | None = None,
) -> OpenDataset:
    """``open_dataset`` with the suite's dataset, options, slice size, split seed and split fractions."""
    return open_dataset(
        suite.dataset,
        data_root,
        suite.dataset_options,
        cache_dir,
        suite.budget.size,
        suite.split_seed,
        suite.split_fractions,
        skip_bad,
        jobs,
        plan,
    )
