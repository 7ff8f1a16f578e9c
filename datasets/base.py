"""Subjects, tasks and the dataset-adapter interface shared by every adapter."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from datasets.core.registry import Registry


class DataError(ValueError):
    """Data on disk is missing, malformed or does not match the request."""


@dataclass(frozen=True)
class Subject:
    """One patient/volume: file paths per modality plus its label file."""

    id: str
    group: str  # institution / partition; "" when the dataset has none
    images: dict[str, Path]  # modality -> file
    label: Path | None  # None for unlabelled subjects (never trained or scored)
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class Task:
    """What is segmented from what: ``GROUP-MODALITY-REGION[+REGION...]``.

    ``group`` is ``"*"`` for all groups and ``""`` for datasets without groups
    (``t2-GM``). Several regions give a multi-class task (class i+1 = region i).
    """

    group: str
    modality: str
    regions: tuple[str, ...]

    @classmethod
    def parse(cls, text: str, has_groups: bool = True) -> Task:
        parts = text.split("-")
        if has_groups and len(parts) == 3:
            group, modality, regions = parts
        elif len(parts) == 2:
            group, (modality, regions) = ("*" if has_groups else ""), parts
        else:
            form = "GROUP-MODALITY-REGION or MODALITY-REGION" if has_groups else "MODALITY-REGION"
            raise DataError(f"task {text!r} is not of the form {form}")
        if not modality or not regions or any(not r for r in regions.split("+")):
            raise DataError(f"task {text!r} has an empty modality or region")
        return cls(group, modality, tuple(regions.split("+")))

    def __str__(self) -> str:
        head = f"{self.group}-" if self.group else ""
        return f"{head}{self.modality}-{'+'.join(self.regions)}"

    @property
    def num_classes(self) -> int:
        """Background plus one class per region."""
        return 1 + len(self.regions)


class DatasetAdapter:
    """Reads one on-disk layout into Subjects.

    Subclasses set the class fields, register with ``@DATASETS.register(name)``
    and validate the layout in ``__init__`` (a ``DataError`` naming the path).
    """

    name: ClassVar[str] = ""
    # Class-level defaults; adapters whose label scheme depends on options/files set them per instance.
    regions: dict[str, frozenset[int]] = {}
    label_values: frozenset[int] = frozenset()
    has_groups: ClassVar[bool] = True

    def __init__(self, root: Path, **options: Any) -> None:
        self.root = Path(root)
        self.options = options
        if not self.root.is_dir():
            raise DataError(f"--data-root {self.root}: no such folder")

    @classmethod
    def default_root(cls, cache_dir: Path) -> Path:
        """Where the embedded data lives (generated on first use); real datasets need --data-root."""
        raise DataError(f"dataset {cls.name!r} needs --data-root (the folder as the challenge distributed it)")

    def subjects(self) -> list[Subject]:  # pragma: no cover - interface
        raise NotImplementedError

    def labelled_subjects(self) -> list[Subject]:
        """Subjects with a label file: the only ones used for training or scoring."""
        return [s for s in self.subjects() if s.label is not None]

    def modalities(self) -> list[str]:
        return sorted({m for s in self.subjects() for m in s.images})

    def groups(self) -> list[str]:
        return sorted({s.group for s in self.subjects()})

    def parse_task(self, text: str) -> Task:
        """Parse and validate a task; the error lists what exists."""
        task = Task.parse(text, self.has_groups)
        if task.group not in ("*", "") and task.group not in self.groups():
            # "1" and "01" name the same partition: challenge CSVs differ in zero-padding.
            same = [g for g in self.groups() if g.isdigit() and task.group.isdigit() and int(g) == int(task.group)]
            if len(same) != 1:
                raise DataError(f"task {text!r}: unknown group {task.group!r}; valid: {', '.join(self.groups())}")
            task = replace(task, group=same[0])
        if task.modality not in self.modalities():
            raise DataError(f"task {text!r}: unknown modality {task.modality!r}; valid: {', '.join(self.modalities())}")
        for region in task.regions:
            if region not in self.regions:
                raise DataError(f"task {text!r}: unknown region {region!r}; valid: {', '.join(self.regions)}")
        return task

    def risk_map(self, subject: Subject, source: Task, target: Task) -> Path | None:
        """The subject's ground-truth risk map file for the transfer (1 where the source task conflicts with the
        target task by construction), or None: only generated testbeds know one (``brainsim``)."""
        return None

    def task_subjects(self, task: Task) -> list[Subject]:
        """Labelled subjects of the task's group that have its modality."""
        return [s for s in self.labelled_subjects() if task.group in ("*", "", s.group) and task.modality in s.images]


# The built-in adapters' modules, imported on the registry's first lookup (``datasets/__init__`` loads none).
BUILTIN_ADAPTERS = tuple(f"datasets.{m}" for m in ("brainsim", "brats", "fets", "iseg", "mni152", "msd"))
DATASETS: Registry[type[DatasetAdapter]] = Registry(
    "dataset", entry_point_group="ntbench.datasets", builtins=BUILTIN_ADAPTERS
)
