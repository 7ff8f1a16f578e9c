"""Dataset adapters: files on disk -> Subjects -> cached 2D slices.

Importing the package registers the built-in adapters (fets2021, phantom, brats2021,
iseg2019, mni152, msd, brainsim); ``DATASETS.names()`` lists them.
The torch-dependent slice API (``datasets.slices``) is imported lazily, so that
``datasets.base`` stays usable without torch.
"""

from importlib import import_module
from typing import Any

from datasets import brainsim, brats, fets, iseg, mni152, msd  # noqa: F401  (importing registers the adapters)
from datasets.base import DATASETS, DataError, DatasetAdapter, Subject, Task
from datasets.phantom import generate_phantom, phantom_root
from datasets.splits import few_shot, split_subjects

_LAZY = {
    name: "datasets.slices"
    for name in ("SliceDataset", "SliceSet", "assemble_volume", "load_slices", "preprocess_subjects")
}

__all__ = [
    "DATASETS",
    "DataError",
    "DatasetAdapter",
    "Subject",
    "Task",
    "few_shot",
    "generate_phantom",
    "phantom_root",
    "split_subjects",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'datasets' has no attribute {name!r}")
