"""Per-subject preprocessing cache and the 2D slice sets built from it.

``preprocess_subjects`` decodes each subject once (all modalities + label), z-scores
each modality inside the brain, resizes in-plane and stores the brain-holding axial
slices as one ``.npz`` per subject. ``load_slices`` turns cached subjects into the
input/label arrays of one task; ``SliceDataset`` serves them to torch with optional
MONAI augmentation; ``assemble_volume`` puts per-slice predictions back into 3D.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    RandFlipd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Resize,
)
from tqdm import tqdm

from datasets import io as dio
from datasets.base import DataError, DatasetAdapter, Subject, Task

PREPROCESS_VERSION = 1


class PreprocessResult(dict):
    """``subject id -> cached .npz`` for the good subjects; ``bad`` maps skipped ids to their reason."""

    def __init__(self, good: dict[str, Path], bad: dict[str, str]) -> None:
        super().__init__(good)
        self.bad = bad


def _plain(x: torch.Tensor) -> torch.Tensor:
    return x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)


def _files(subject: Subject) -> list[tuple[str, Path]]:
    files = sorted(subject.images.items())
    return files + ([("label", subject.label)] if subject.label is not None else [])


def cache_key(
    adapter_name: str, subject: Subject, size: tuple[int, int], modalities: list[str], label_values: frozenset[int]
) -> str:
    """Hash of everything the cached arrays depend on: inputs (path, size, mtime), options, code version."""
    files = []
    for role, path in _files(subject):
        try:
            st = os.stat(path)
            files.append((role, str(Path(path).resolve()), st.st_size, st.st_mtime_ns))
        except OSError:
            files.append((role, str(path), -1, -1))  # missing: reported when the subject is loaded
    blob = json.dumps(
        [PREPROCESS_VERSION, adapter_name, subject.id, list(size), modalities, sorted(label_values), files]
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _resize(volume: np.ndarray, size: tuple[int, int], label: bool) -> np.ndarray:
    """In-plane resize of an (h, w, d) volume: area/linear for images, nearest for labels (MONAI)."""
    if volume.shape[:2] == tuple(size):
        return volume
    if label:
        mode = "nearest-exact"
    else:
        mode = "area" if size[0] <= volume.shape[0] and size[1] <= volume.shape[1] else "trilinear"
    out = Resize((size[0], size[1], -1), mode=mode)(torch.from_numpy(np.ascontiguousarray(volume))[None])
    return _plain(out)[0].numpy()


def _build(
    subject: Subject, modalities: list[str], label_values: frozenset[int], size: tuple[int, int], out: Path
) -> str | None:
    """Preprocess one subject into ``out`` (atomic); returns the one-line reason if it is bad."""
    try:
        images, label, spacing = dio.load_subject(subject, modalities, label_values)
    except DataError as exc:
        return str(exc)
    brain = np.zeros(next(iter(images.values())).shape, dtype=bool)
    for image in images.values():
        brain |= image != 0  # skull-stripped data: background is exactly 0
    if not brain.any():
        return f"subject {subject.id}: every modality is zero (no brain)"
    keep = np.flatnonzero(brain.any(axis=(0, 1)))
    arrays: dict[str, np.ndarray] = {}
    for modality, image in images.items():
        values = image[brain].astype(np.float64)
        std = values.std()
        norm = np.where(brain, (image - values.mean()) / (std if std > 0 else 1.0), 0.0).astype(np.float32)
        arrays[f"img_{modality}"] = np.moveaxis(_resize(norm[..., keep], size, False), -1, 0).astype(np.float32)
    if label is not None:
        arrays["label"] = np.moveaxis(_resize(label[..., keep].astype(np.float32), size, True), -1, 0).astype(np.int16)
    h, w, d = brain.shape
    resized_spacing = (spacing[0] * h / size[0], spacing[1] * w / size[1], spacing[2])
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                z=keep.astype(np.int32),
                spacing=np.asarray(resized_spacing, dtype=np.float64),
                volume_shape=np.asarray((size[0], size[1], d), dtype=np.int64),
                **arrays,
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return None


def preprocess_subjects(
    adapter: DatasetAdapter,
    subjects: list[Subject],
    cache_dir: Path,
    size: tuple[int, int] = (64, 64),
    jobs: int = 1,
    skip_bad: bool = False,
) -> PreprocessResult:
    """Cache every subject once; returns ``{subject id: .npz path}`` (a ``PreprocessResult``).

    Every modality of the adapter is loaded and validated (``datasets.io.load_subject``).
    Files are ``cache_dir/subjects/<key>.npz``; the key changes with any input file's
    path/size/mtime, ``size`` or ``PREPROCESS_VERSION``. Bad subjects: with ``skip_bad``
    False a ``DataError`` lists all of them with their reasons; with True they are left out
    of the result and listed in ``result.bad`` (id -> reason).
    """
    size = (int(size[0]), int(size[1]))
    ids = [s.id for s in subjects]
    if len(set(ids)) != len(ids):
        raise DataError(f"duplicate subject ids: {sorted({i for i in ids if ids.count(i) > 1})}")
    folder = Path(cache_dir) / "subjects"
    folder.mkdir(parents=True, exist_ok=True)
    modalities = adapter.modalities()
    paths = {s.id: folder / f"{cache_key(adapter.name, s, size, modalities, adapter.label_values)}.npz" for s in subjects}
    todo = [s for s in subjects if not paths[s.id].is_file()]
    errors: dict[str, str | None] = {}
    args = [(s, modalities, adapter.label_values, size, paths[s.id]) for s in todo]
    with tqdm(total=len(todo), desc="preprocess", unit="subject", disable=None) as bar:
        if jobs > 1 and len(todo) > 1:
            with ProcessPoolExecutor(min(jobs, len(todo))) as pool:
                futures = {s.id: pool.submit(_build, *a) for s, a in zip(todo, args)}
                for sid, fut in futures.items():
                    errors[sid] = fut.result()
                    bar.update()
        else:
            for s, a in zip(todo, args):
                errors[s.id] = _build(*a)
                bar.update()
    bad = {sid: reason for sid, reason in errors.items() if reason is not None}
    if bad and not skip_bad:
        listing = "; ".join(f"{sid}: {reason}" for sid, reason in bad.items())
        raise DataError(f"{len(bad)} bad subject(s) (use --skip-bad to skip them): {listing}")
    return PreprocessResult({sid: p for sid, p in paths.items() if sid not in bad}, bad)


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
    ``num_workers=0`` (use ``monai.data.DataLoader`` to seed workers otherwise).
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
            item = self.transform(item)
        out = {key: _plain(value) for key, value in item.items()}
        for key in ("label", *self.maps):
            out[key] = out[key][0]
        out["image"] = out["image"].float()
        out["index"] = int(i)
        return out
