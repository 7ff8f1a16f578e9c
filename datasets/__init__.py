"""Dataset adapters: files on disk -> Subjects -> cached 2D slices.

The built-in adapters (brainsim, brats, fets2021, iseg2019, mni152, msd, phantom) register when
``DATASETS`` is first asked (``DATASETS.names()`` lists them). Importing the package loads nothing: the names
below are imported on first use, so ``datasets.core`` (the bottom layer) and ``datasets.base`` stay light and
the torch-dependent slice API (``datasets.slices``) loads only when named.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    **dict.fromkeys(("DATASETS", "DataError", "DatasetAdapter", "Subject", "Task"), "datasets.base"),
    **dict.fromkeys(("generate_phantom", "phantom_root"), "datasets.phantom"),
    **dict.fromkeys(("few_shot", "split_subjects"), "datasets.splits"),
    **dict.fromkeys(
        ("SliceDataset", "SliceSet", "assemble_volume", "load_slices", "preprocess_subjects"), "datasets.slices"
    ),
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'datasets' has no attribute {name!r}")
