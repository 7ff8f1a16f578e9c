"""Per-subject preprocessing cache and the 2D slice sets built from it.

``preprocess_subjects`` decodes each subject once (all modalities + label), z-scores
each modality inside the brain, resizes in-plane and stores the brain-holding axial
slices as one ``.npz`` per subject. ``load_slices`` turns cached subjects into the
input/label arrays of one task; ``SliceDataset`` serves them to torch with optional
MONAI augmentation; ``assemble_volume`` puts per-slice predictions back into 3D.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor, get_track_meta, set_track_meta
from monai.transforms import Compose, RandFlipd, RandRotate90d, RandScaleIntensityd, RandShiftIntensityd

from datasets.base import DataError, Task
from datasets.io import load_volume
from datasets.preprocess import PREPROCESS_VERSION, PreprocessResult, cache_key, preprocess_subjects, resize_inplane

__all__ = [
    "PREPROCESS_VERSION",
    "PreprocessResult",
    "SliceDataset",
    "SliceSet",
    "assemble_volume",
    "cache_key",
    "load_slices",
    "map_labels",
    "preprocess_subjects",
]


def _plain(x: torch.Tensor) -> torch.Tensor:
    return x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)


@dataclass
class SliceSet:
    """The 2D slices of one task: input channel, class labels and where each slice came from."""

    images: np.ndarray  # (N, 1, H, W) float32
    labels: np.ndarray  # (N, H, W) uint8, task classes 0..C-1
    subject_index: np.ndarray  # (N,) int32 into subject_ids
    z: np.ndarray  # (N,) int32 axial index in the resized volume
    subject_ids: list[str]
    volume_shape: dict[str, tuple[int, int, int]]  # resized (H, W, D)
    spacing: dict[str, tuple[float, float, float]]  # mm, after resize

    def __len__(self) -> int:
        return len(self.images)

    @classmethod
    def of_volume(cls, images: np.ndarray, labels: np.ndarray, subject_id: str = "s") -> SliceSet:
        """The slices (N, 1, H, W) / (N, H, W) of one volume at 1 mm spacing, slice i at z = i."""
        n, h, w = labels.shape
        return cls(
            images.astype(np.float32, copy=False),
            labels.astype(np.uint8, copy=False),
            np.zeros(n, np.int32),
            np.arange(n, dtype=np.int32),
            [subject_id],
            {subject_id: (h, w, n)},
            {subject_id: (1.0, 1.0, 1.0)},
        )


def map_labels(raw: np.ndarray, task: Task, regions: dict[str, frozenset[int]]) -> np.ndarray:
    """Class i+1 where the raw value lies in the i-th region of the task; later regions win on overlap."""
    out = np.zeros(raw.shape, dtype=np.uint8)
    for i, name in enumerate(task.regions):
        out[np.isin(raw, sorted(regions[name]))] = i + 1
    return out


def load_slices(
    cached: dict[str, Path], subject_ids: list[str], task: Task, regions: dict[str, frozenset[int]]
) -> SliceSet:
    """Stack the cached slices of ``subject_ids`` for ``task`` (its modality is the one input channel)."""
    unknown = [r for r in task.regions if r not in regions]
    if unknown:
        raise DataError(f"task {task}: unknown region(s) {unknown}; valid: {', '.join(regions)}")
    images, labels, index, zs = [], [], [], []
    shapes, spacings = {}, {}
    for i, sid in enumerate(subject_ids):
        if sid not in cached:
            raise DataError(f"subject {sid}: not in the preprocessed cache (bad or not preprocessed)")
        with np.load(cached[sid]) as data:
            key = f"img_{task.modality}"
            if key not in data.files:
                raise DataError(f"subject {sid}: no modality {task.modality!r} in {cached[sid]}")
            if "label" not in data.files:
                raise DataError(f"subject {sid}: unlabelled, cannot be used for task {task}")
            images.append(data[key])
            labels.append(map_labels(data["label"], task, regions))
            zs.append(data["z"])
            shapes[sid] = tuple(int(v) for v in data["volume_shape"])
            spacings[sid] = tuple(float(v) for v in data["spacing"])
        index.append(np.full(len(zs[-1]), i, dtype=np.int32))
    if not images:
        raise DataError(f"task {task}: no subjects to load")
    return SliceSet(
        images=np.concatenate(images)[:, None].astype(np.float32, copy=False),
        labels=np.concatenate(labels),
        subject_index=np.concatenate(index),
        z=np.concatenate(zs).astype(np.int32),
        subject_ids=list(subject_ids),
        volume_shape=shapes,
        spacing=spacings,
    )


def load_maps(cached: dict[str, Path], maps: dict[str, Path]) -> np.ndarray:
    """Per-slice maps (N, H, W) float32 from one volume file per subject, aligned with ``load_slices`` of the
    same subjects in the same order: the cached slices' axial indices, resized in-plane as labels are."""
    out = []
    for sid, path in maps.items():
        with np.load(cached[sid]) as data:
            z, shape = data["z"], tuple(int(v) for v in data["volume_shape"])
        volume, _ = load_volume(path)
        if volume.shape[2] <= int(z.max(initial=0)):
            raise DataError(f"{path}: {volume.shape[2]} slices, but subject {sid} has slices up to {int(z.max())}")
        out.append(np.moveaxis(resize_inplane(volume[..., z], shape[:2], True), -1, 0).astype(np.float32))
    return np.concatenate(out)


def assemble_volume(slices: SliceSet, subject_id: str, per_slice: np.ndarray) -> np.ndarray:
    """Put a subject's per-slice maps back at their z; dropped (brain-free) slices are zero.

    ``per_slice`` is (N, H, W) for the whole set, or (n, H, W) for this subject's slices in order.
    """
    rows = np.flatnonzero(slices.subject_index == slices.subject_ids.index(subject_id))
    per_slice = np.asarray(per_slice)
    if len(per_slice) == len(slices):
        per_slice = per_slice[rows]
    elif len(per_slice) != len(rows):
        raise ValueError(f"per_slice has {len(per_slice)} slices; expected {len(slices)} or {len(rows)} ({subject_id})")
    volume = np.zeros(slices.volume_shape[subject_id], dtype=per_slice.dtype)
    volume[..., slices.z[rows]] = np.moveaxis(per_slice, 0, -1)
    return volume


class SliceDataset(torch.utils.data.Dataset):
    """Torch view of a SliceSet; items are dicts (image, label, index, attached maps).

    With ``augment``: random flips on both axes and 90-degree rotations, applied jointly to
    image, label and every attached map (exact permutations, so labels stay exact), plus a
    mild random intensity scale and shift of the image. Deterministic for ``seed`` with
    ``num_workers=0`` (use ``monai.data.DataLoader`` to seed workers otherwise). Training reads
    it through ``datasets.device_batches.DeviceBatches``, which replays these transforms' random
    draws on device-resident slices: change the transforms there too (its test checks bit-identity).
    """

    def __init__(self, slices: SliceSet, augment: bool = False, seed: int = 0) -> None:
        self.slices = slices
        self.augment = augment
        self.maps: dict[str, np.ndarray] = {}
        self.seed = seed
        self._build_transform()

    def _build_transform(self) -> None:
        spatial = ["image", "label", *self.maps]
        self.transform = Compose(
            [
                RandFlipd(spatial, prob=0.5, spatial_axis=0),
                RandFlipd(spatial, prob=0.5, spatial_axis=1),
                RandRotate90d(spatial, prob=0.5, max_k=3, spatial_axes=(0, 1)),
                RandScaleIntensityd("image", factors=0.1, prob=0.5),
                RandShiftIntensityd("image", offsets=0.1, prob=0.5),
            ]
        ).set_random_state(seed=self.seed)

    def attach(self, name: str, maps: np.ndarray) -> None:
        """Add a per-slice map (N, H, W) returned as ``item[name]`` and augmented with the label."""
        if name in ("image", "label", "index"):
            raise ValueError(f"attach: {name!r} is a reserved item key")
        if maps.shape != self.slices.labels.shape:
            raise ValueError(f"attach {name!r}: shape {maps.shape} != labels {self.slices.labels.shape}")
        self.maps[name] = maps
        self._build_transform()  # restarts the random stream at the seed

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, i: int) -> dict:
        item = {
            "image": torch.tensor(self.slices.images[i], dtype=torch.float32),
            "label": torch.tensor(self.slices.labels[i], dtype=torch.int64)[None],
        }
        for name, maps in self.maps.items():
            item[name] = torch.tensor(np.asarray(maps[i], dtype=np.float32))[None]
        if self.augment:
            tracking = get_track_meta()
            set_track_meta(False)  # plain tensors: 3x faster, and no metadata is needed here
            try:
                item = self.transform(item)
            finally:
                set_track_meta(tracking)
        out = {key: _plain(value) for key, value in item.items()}
        for key in ("label", *self.maps):
            out[key] = out[key][0]
        out["image"] = out["image"].float()
        out["index"] = int(i)
        return out
