"""Medical Segmentation Decathlon and nnU-Net raw-folder reader.

Layout (``root`` or exactly one folder below it): ``dataset.json``, ``labelsTr/CASE.nii.gz`` and either
``imagesTr/CASE_0000.nii.gz, CASE_0001.nii.gz, ...`` (one file per channel: nnU-Net v1/v2) or
``imagesTr/CASE.nii.gz`` (MSD: all channels in one 4D file, channel on the last axis).
Modalities are the channel names (``channel_names`` in nnU-Net v2, ``modality`` in MSD/v1), lower-cased;
regions are the label names (``labels``: v2 name -> value or list of values, MSD/v1 value -> name), the
background (value 0) excluded. Names are made task-safe: runs of characters other than letters, digits
and ``_`` become ``_`` (``non-enhancing tumor`` -> ``non_enhancing_tumor``). Cases are the label files;
macOS ``._*`` debris from the MSD archives is ignored. No groups.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from datasets.base import DATASETS, DataError, DatasetAdapter, Subject
from datasets.io import header_spacing

READABLE_ENDINGS = (".nii.gz", ".nii")
LAYOUT = (
    "dataset.json, labelsTr/CASE.nii.gz and imagesTr/CASE_0000.nii.gz... (one file per channel) "
    "or imagesTr/CASE.nii.gz (4D, channels last)"
)


def channel_path(path: Path, channel: int) -> Path:
    """``FILE::C``: channel ``C`` on the last axis of a 4D file (read by ``datasets.io.load_volume``)."""
    return Path(f"{path}::{channel}")


def _safe(name: object, what: str, source: Path) -> str:
    text = re.sub(r"[^0-9A-Za-z_]+", "_", str(name)).strip("_")
    if not text:
        raise DataError(f"{source}: {what} name {name!r} has no letter or digit")
    return text


def _indexed(table: object, key: str, source: Path) -> list[str]:
    """``{"0": name, "1": name, ...}`` -> names in index order (indices must be 0..n-1)."""
    if not isinstance(table, dict) or not table:
        raise DataError(f"{source}: {key!r} must be a non-empty mapping of index -> name")
    try:
        order = sorted(table, key=int)
    except ValueError:
        raise DataError(f"{source}: {key!r} keys must be channel indices 0..n-1, got {sorted(table)}") from None
    if [int(k) for k in order] != list(range(len(order))):
        raise DataError(f"{source}: {key!r} keys must be 0..{len(order) - 1}, got {order}")
    return [str(table[k]) for k in order]


def _channels(meta: dict, source: Path) -> list[str]:
    key = "channel_names" if "channel_names" in meta else "modality"
    if key not in meta:
        raise DataError(f"{source}: no 'channel_names' (nnU-Net v2) or 'modality' (MSD) entry")
    names = [_safe(n, "channel", source).lower() for n in _indexed(meta[key], key, source)]
    # Repeated names (e.g. two "MRI" channels) are told apart by their channel index.
    return [f"{n}_{i}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def _int(value: object, source: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
        raise DataError(f"{source}: label value {value!r} is not a non-negative integer")
    return int(value)


def _labels(meta: dict, source: Path) -> tuple[dict[str, frozenset[int]], frozenset[int]]:
    """Regions and declared label values from ``labels`` (v2 name -> value(s) or MSD/v1 value -> name)."""
    table = meta.get("labels")
    if not isinstance(table, dict) or not table:
        raise DataError(f"{source}: 'labels' must be a non-empty mapping")
    if all(isinstance(v, str) for v in table.values()):  # MSD/v1: {"0": "background", "1": "edema"}
        pairs = [(name, frozenset({_int(value, source)})) for value, name in table.items()]
    else:  # v2: {"background": 0, "edema": 1} or region-based {"whole tumor": [1, 2, 3]}
        pairs = [
            (name, frozenset(_int(v, source) for v in (value if isinstance(value, list) else [value])))
            for name, value in table.items()
        ]
    regions: dict[str, frozenset[int]] = {}
    for name, values in pairs:
        if values == {0}:
            continue
        safe = _safe(name, "label", source)
        if safe in regions or not values:
            raise DataError(f"{source}: label {name!r} is empty or repeats the region name {safe!r}")
        regions[safe] = values
    if not regions:
        raise DataError(f"{source}: 'labels' declares no foreground label")
    return regions, frozenset({0}).union(*regions.values())


@DATASETS.register("msd")
class MSD(DatasetAdapter):
    """One MSD task folder or nnU-Net raw dataset folder; regions and modalities come from dataset.json."""

    has_groups = False

    def __init__(self, root: Path, **unknown: Any) -> None:
        if unknown:
            raise DataError(f"dataset msd: unknown option(s) {sorted(unknown)}; it takes none")
        super().__init__(root)
        self.root = self._locate(self.root)
        source = self.root / "dataset.json"
        try:
            meta = json.loads(source.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{source}: unreadable ({type(exc).__name__}: {exc})") from None
        if not isinstance(meta, dict):
            raise DataError(f"{source}: expected a JSON object")
        self.channels = _channels(meta, source)
        self.regions, self.label_values = _labels(meta, source)
        self.ending = str(meta.get("file_ending", ".nii.gz"))
        if self.ending not in READABLE_ENDINGS:
            raise DataError(f"{source}: file_ending {self.ending!r} is not supported; valid: {READABLE_ENDINGS}")
        labels = self.root / "labelsTr"
        cases = sorted(
            p.name[: -len(self.ending)]
            for p in (labels.iterdir() if labels.is_dir() else [])
            if p.name.endswith(self.ending) and not p.name.startswith(".")
        )
        if not cases:
            raise DataError(f"{labels}: no label files *{self.ending}; expected {LAYOUT}")
        self._subjects = [self._subject(case) for case in cases]

    @staticmethod
    def _locate(root: Path) -> Path:
        """The folder holding dataset.json: ``root`` itself or exactly one folder below it."""
        if (root / "dataset.json").is_file():
            return root
        found = [d for d in sorted(root.iterdir()) if (d / "dataset.json").is_file()]
        if len(found) == 1:
            return found[0]
        if found:
            raise DataError(f"{root}: several dataset folders {[d.name for d in found]}; give one as --data-root")
        raise DataError(f"{root}: no dataset.json here or one level down; expected {LAYOUT}")

    def _subject(self, case: str) -> Subject:
        folder = self.root / "imagesTr"
        split = [folder / f"{case}_{i:04d}{self.ending}" for i in range(len(self.channels))]
        whole = folder / f"{case}{self.ending}"
        if any(p.is_file() for p in split) or not whole.is_file():
            paths = split  # per-channel files (missing ones keep their expected path: validation names them)
        elif len(self.channels) == 1:
            paths = [whole]
        else:
            paths = [channel_path(whole, i) for i in range(len(self.channels))]
        spacing = header_spacing(whole if whole.is_file() else split[0])
        label = self.root / "labelsTr" / f"{case}{self.ending}"
        return Subject(case, "", dict(zip(self.channels, paths)), label, spacing)

    def subjects(self) -> list[Subject]:
        """One subject per label file."""
        return list(self._subjects)
