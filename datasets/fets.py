"""FeTS 2021 (federated BraTS) reader, and the embedded phantom that uses the same layout.

Layout: ``partitioning_{N}.csv`` (``Subject_ID,Partition_ID``) next to one folder per
subject holding ``<id>_{t1,t1ce,t2,flair,seg}.nii.gz`` (``_t1gd`` is accepted for t1ce).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from datasets.base import DATASETS, DataError, DatasetAdapter, Subject
from datasets.io import header_spacing
from datasets.phantom import generate_phantom, phantom_root

MODALITY_SUFFIXES = {"t1": ("t1",), "t1ce": ("t1ce", "t1gd"), "t2": ("t2",), "flair": ("flair",)}
EXTENSIONS = (".nii.gz", ".nii")


def _find(folder: Path, stem: str, suffixes: tuple[str, ...]) -> Path | None:
    for suffix in suffixes:
        for ext in EXTENSIONS:
            path = folder / f"{stem}_{suffix}{ext}"
            if path.is_file():
                return path
    return None


@DATASETS.register("fets2021")
class FeTS2021(DatasetAdapter):
    """FeTS 2021 training data; groups are the Partition_ID strings of the chosen partitioning."""

    regions = {
        "NCR": frozenset({1}),
        "ED": frozenset({2}),
        "ET": frozenset({4}),
        "TC": frozenset({1, 4}),
        "WT": frozenset({1, 2, 4}),
    }
    label_values = frozenset({0, 1, 2, 4})
    has_groups = True

    def __init__(self, root: Path, partitioning: int = 1, **options: Any) -> None:
        super().__init__(root, **options)
        if options:
            valid = "partitioning, aligned" if self.name == "phantom" else "partitioning"
            raise DataError(f"dataset {self.name!r}: unknown option(s) {sorted(options)}; valid: {valid}")
        try:
            self.partitioning = int(partitioning)
        except (TypeError, ValueError):
            raise DataError(f"dataset {self.name!r}: partitioning={partitioning!r} is not an integer") from None
        self.root = self._locate(self.root)
        self.csv = self.root / f"partitioning_{self.partitioning}.csv"
        if not self.csv.is_file():
            have = ", ".join(sorted(p.name for p in self.root.glob("partitioning_*.csv")))
            raise DataError(f"{self.csv}: not found (--partitioning {self.partitioning}); present: {have}")
        self._subjects: list[Subject] | None = None

    @staticmethod
    def _locate(root: Path) -> Path:
        """The folder holding partitioning_1.csv: ``root`` itself or exactly one subfolder."""
        if (root / "partitioning_1.csv").is_file():
            return root
        found = [d for d in sorted(root.iterdir()) if d.is_dir() and (d / "partitioning_1.csv").is_file()]
        if len(found) == 1:
            return found[0]
        what = f"several candidates {[d.name for d in found]}" if found else "none found"
        raise DataError(
            f"{root}: expected the FeTS 2021 layout (partitioning_1.csv and one folder per subject) "
            f"here or one level down; {what}"
        )

    def subjects(self) -> list[Subject]:
        """All subjects listed in the partitioning CSV (read once, then cached)."""
        if self._subjects is None:
            self._subjects = self._read()
        return list(self._subjects)

    def _read(self) -> list[Subject]:
        try:
            table = pd.read_csv(self.csv, dtype=str, keep_default_na=False)
        except Exception as exc:
            raise DataError(f"{self.csv}: unreadable CSV ({type(exc).__name__}: {exc})") from None
        if list(table.columns[:2]) != ["Subject_ID", "Partition_ID"]:
            raise DataError(f"{self.csv}: expected header Subject_ID,Partition_ID, got {','.join(table.columns)}")
        subjects = []
        for sid, group in zip(table["Subject_ID"].str.strip(), table["Partition_ID"].str.strip()):
            folder = self.root / sid
            if not folder.is_dir():
                raise DataError(f"{self.csv}: subject {sid} is listed but its folder {folder} is missing")
            images = {m: p for m, suf in MODALITY_SUFFIXES.items() if (p := _find(folder, sid, suf)) is not None}
            if not images:
                raise DataError(f"{folder}: no modality file {sid}_{{t1,t1ce,t2,flair}}.nii.gz")
            label = _find(folder, sid, ("seg",))
            spacing = header_spacing(next(iter(images.values())))
            subjects.append(Subject(sid, group, images, label, spacing))
        return subjects


@DATASETS.register("phantom")
class Phantom(FeTS2021):
    """The procedural brain-tumour phantom (datasets.phantom), generated on first use."""

    def __init__(self, root: Path, aligned: bool | str = False, **options: Any) -> None:
        flag = str(aligned).strip().lower()
        if flag not in ("true", "false", "1", "0", "yes", "no"):
            raise DataError(f"dataset 'phantom': aligned={aligned!r} is not true or false")
        if flag in ("true", "1", "yes"):  # the aligned variant, generated once beside the default phantom
            root = generate_phantom(Path(root).parent / f"{Path(root).name}-aligned", aligned=True)
        super().__init__(root, **options)

    @classmethod
    def default_root(cls, cache_dir: Path) -> Path:
        return phantom_root(cache_dir)
