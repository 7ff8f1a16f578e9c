"""BraTS 2020, 2021 and 2023+ readers (one adapter; the naming of the subject folders tells them apart).

Layouts (one folder per subject, ``root`` or exactly one folder below it):
``BraTS20_Training_NNN/BraTS20_Training_NNN_{t1,t1ce,t2,flair,seg}.nii.gz`` (2020),
``BraTS2021_NNNNN/BraTS2021_NNNNN_{t1,t1ce,t2,flair,seg}.nii.gz`` (2021),
``BraTS-GLI-NNNNN-NNN/BraTS-GLI-NNNNN-NNN-{t1n,t1c,t2w,t2f,seg}.nii.gz`` (2023+, any cohort code:
GLI, MEN, MET, PED, SSA; read as t1, t1ce, t2, flair). ``.nii`` is accepted for ``.nii.gz``.
A subject without a ``seg`` file is unlabelled (validation releases) and is never trained or scored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets.base import DATASETS, DataError, DatasetAdapter, Subject
from datasets.io import header_spacing

EXTENSIONS = (".nii.gz", ".nii")


@dataclass(frozen=True)
class Naming:
    """One release's folder/file naming and the label scheme it implies."""

    folder: re.Pattern[str]
    sep: str  # between the subject id and the file suffix
    suffixes: dict[str, str]  # modality -> file suffix
    labels: str  # key of LABEL_SCHEMES


_CLASSIC = {"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair"}
NAMINGS = (
    Naming(re.compile(r"BraTS20_(Training|Validation)_\d+"), "_", _CLASSIC, "2021"),
    Naming(re.compile(r"BraTS2021_\d+"), "_", _CLASSIC, "2021"),
    Naming(re.compile(r"BraTS-[A-Z]+-\d+-\d+"), "-", {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}, "2023"),
)

# BraTS 2017-2021: 1 NCR/NET, 2 ED, 4 ET (Bakas et al. 2018, arXiv:1811.02629; Baid et al. 2021, arXiv:2107.02314).
# BraTS 2023+: 1 NETC, 2 SNFH (oedema), 3 ET: ET moved from 4 to 3 (BraTS 2023 data description, Synapse).
LABEL_SCHEMES: dict[str, tuple[frozenset[int], dict[str, frozenset[int]]]] = {
    "2021": (
        frozenset({0, 1, 2, 4}),
        {
            "NCR": frozenset({1}),
            "ED": frozenset({2}),
            "ET": frozenset({4}),
            "TC": frozenset({1, 4}),
            "WT": frozenset({1, 2, 4}),
        },
    ),
    "2023": (
        frozenset({0, 1, 2, 3}),
        {
            "NCR": frozenset({1}),
            "ED": frozenset({2}),
            "ET": frozenset({3}),
            "TC": frozenset({1, 3}),
            "WT": frozenset({1, 2, 3}),
        },
    ),
}

LAYOUT = (
    "BraTS20_Training_NNN/BraTS20_Training_NNN_{t1,t1ce,t2,flair,seg}.nii.gz (2020), "
    "BraTS2021_NNNNN/BraTS2021_NNNNN_{t1,t1ce,t2,flair,seg}.nii.gz (2021) or "
    "BraTS-GLI-NNNNN-NNN/BraTS-GLI-NNNNN-NNN-{t1n,t1c,t2w,t2f,seg}.nii.gz (2023+)"
)


def _naming(folder: Path) -> Naming | None:
    naming = next((n for n in NAMINGS if n.folder.fullmatch(folder.name)), None)
    return naming if naming is not None and folder.is_dir() else None


def _subject_folders(folder: Path) -> list[tuple[Path, Naming]]:
    return [(d, n) for d in sorted(folder.iterdir()) if (n := _naming(d)) is not None]


def _file(folder: Path, sep: str, suffix: str) -> Path:
    """The existing ``<id><sep><suffix>.nii.gz`` (or ``.nii``); the expected ``.nii.gz`` path if neither exists."""
    paths = [folder / f"{folder.name}{sep}{suffix}{ext}" for ext in EXTENSIONS]
    return next((p for p in paths if p.is_file()), paths[0])


@DATASETS.register("brats")
class BraTS(DatasetAdapter):
    """BraTS training (or validation) data; no groups. Option ``labels=2021|2023`` (default: from the naming)."""

    regions = LABEL_SCHEMES["2021"][1]
    label_values = LABEL_SCHEMES["2021"][0]
    has_groups = False

    def __init__(self, root: Path, labels: str | int | None = None, **unknown: Any) -> None:
        if unknown:
            raise DataError(f"dataset brats: unknown option(s) {sorted(unknown)}; valid: labels=2021|2023")
        super().__init__(root)
        self.root, folders = self._locate(self.root)
        schemes = {n.labels for _, n in folders}
        if labels is None:
            if len(schemes) > 1:
                raise DataError(f"{self.root}: mixes 2020/2021 and 2023+ subject naming; pass labels=2021 or 2023")
            labels = schemes.pop()
        if str(labels) not in LABEL_SCHEMES:
            raise DataError(f"dataset brats: labels={labels!r}; valid: {', '.join(LABEL_SCHEMES)}")
        self.labels = str(labels)
        self.label_values, self.regions = LABEL_SCHEMES[self.labels]
        self._subjects = [self._subject(folder, naming) for folder, naming in folders]

    @staticmethod
    def _locate(root: Path) -> tuple[Path, list[tuple[Path, Naming]]]:
        """The folder holding the subject folders (``root`` or exactly one folder below) and its subjects."""
        found = _subject_folders(root)
        if found:
            return root, found
        below = [(d, f) for d in sorted(root.iterdir()) if d.is_dir() and (f := _subject_folders(d))]
        if len(below) == 1:
            return below[0]
        if below:
            raise DataError(f"{root}: several BraTS folders {[d.name for d, _ in below]}; give one as --data-root")
        raise DataError(f"{root}: no BraTS subject folders here or one level down; expected {LAYOUT}")

    @staticmethod
    def _subject(folder: Path, naming: Naming) -> Subject:
        images = {m: _file(folder, naming.sep, suffix) for m, suffix in naming.suffixes.items()}
        seg = _file(folder, naming.sep, "seg")
        present = next((p for p in images.values() if p.is_file()), None)
        spacing = header_spacing(present) if present else (1.0, 1.0, 1.0)
        return Subject(folder.name, "", images, seg if seg.is_file() else None, spacing)

    def subjects(self) -> list[Subject]:
        """Every subject folder; a missing modality keeps its expected path, so validation names the file."""
        return list(self._subjects)
