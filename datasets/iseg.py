"""iSeg-2019 (6-month infant brain MRI) reader.

Layout: ``iSeg-2019-Training/subject-N-{T1,T2,label}.{hdr,img}`` (Analyze 7.5 pairs with a trailing
singleton axis, squeezed on reading). ``root`` is the folder holding ``iSeg-2019-Training`` (then the
``iSeg-2019-Validation`` and ``iSeg-2019-Testing`` folders beside it, if present, add unlabelled subjects)
or the training folder itself. Subjects without a label pair are unlabelled: never trained or scored.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from datasets.base import DATASETS, DataError, DatasetAdapter, Subject
from datasets.io import header_spacing

TRAINING = "iSeg-2019-Training"
UNLABELLED = ("iSeg-2019-Validation", "iSeg-2019-Testing")
MODALITIES = {"t1": "T1", "t2": "T2"}  # task name -> file tag
FILE = re.compile(r"subject-(\d+)-(T1|T2|label)\.(hdr|img)")
LAYOUT = f"{TRAINING}/subject-N-{{T1,T2,label}}.{{hdr,img}} (Analyze 7.5 pairs)"


def _pair(folder: Path, stem: str) -> Path:
    """The path to read: the ``.img`` when its ``.hdr`` exists, else the (missing) ``.hdr``, so errors name it."""
    hdr = folder / f"{stem}.hdr"
    return hdr.with_suffix(".img") if hdr.is_file() else hdr


@DATASETS.register("iseg2019")
class ISeg2019(DatasetAdapter):
    """iSeg-2019 training (and validation) subjects; no groups, modalities t1 and t2."""

    # Label values 10 CSF, 150 GM, 250 WM (iSeg-2019 data description; Sun et al., IEEE TMI 2021, arXiv:2007.02096).
    regions = {"CSF": frozenset({10}), "GM": frozenset({150}), "WM": frozenset({250})}
    label_values = frozenset({0, 10, 150, 250})
    has_groups = False

    def __init__(self, root: Path, **unknown: Any) -> None:
        if unknown:
            raise DataError(f"dataset {self.name}: unknown option(s) {sorted(unknown)}; it takes none")
        super().__init__(root)
        if (self.root / TRAINING).is_dir():
            folders = [(self.root / TRAINING, True)] + [(self.root / n, False) for n in UNLABELLED]
        else:
            folders = [(self.root, True)]
        self._subjects = [s for folder, labelled in folders if folder.is_dir() for s in self._read(folder, labelled)]
        if not self._subjects:
            raise DataError(f"{self.root}: no iSeg-2019 subjects; expected {LAYOUT} here or the files themselves")
        seen: dict[str, Path] = {}
        for s in self._subjects:
            if s.id in seen:
                raise DataError(f"{s.images['t1'].parent}: subject {s.id} is also in {seen[s.id]}")
            seen[s.id] = s.images["t1"].parent

    @staticmethod
    def _read(folder: Path, labelled: bool) -> list[Subject]:
        numbers = sorted({int(m.group(1)) for p in folder.iterdir() if (m := FILE.fullmatch(p.name))})
        subjects = []
        for n in numbers:
            sid = f"subject-{n}"
            images = {m: _pair(folder, f"{sid}-{tag}") for m, tag in MODALITIES.items()}
            has_label = labelled and any((folder / f"{sid}-label.{ext}").is_file() for ext in ("hdr", "img"))
            label = _pair(folder, f"{sid}-label") if has_label else None
            subjects.append(Subject(sid, "", images, label, header_spacing(images["t1"])))
        return subjects

    def subjects(self) -> list[Subject]:
        """Every subject found; a missing file keeps its expected path, so validation names it."""
        return list(self._subjects)
