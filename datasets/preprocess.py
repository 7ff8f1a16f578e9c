"""Per-subject preprocessing cache (numpy/scipy only, so worker processes never import torch).

Each subject is decoded once: all modalities + label (validated by ``datasets.io.load_subject``),
brain mask = any modality non-zero, per-modality z-score inside the brain (0 outside),
in-plane resize, and only the axial slices that hold brain are kept in one ``.npz``.
Re-exported by ``datasets.slices``.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter, zoom
from tqdm import tqdm

from datasets import io as dio
from datasets.base import DataError, DatasetAdapter, Subject
from datasets.core.files import atomic_write

PREPROCESS_VERSION = 1


class PreprocessResult(dict):
    """``subject id -> cached .npz`` for the good subjects; ``bad`` maps skipped ids to their reason."""

    def __init__(self, good: dict[str, Path], bad: dict[str, str]) -> None:
        super().__init__(good)
        self.bad = bad


def cache_key(
    adapter_name: str,
    subject: Subject,
    size: tuple[int, int],
    modalities: list[str],
    label_values: frozenset[int],
) -> str:
    """Hash of what the cached arrays depend on: input files (path, size, mtime), options, code version."""
    files = sorted(subject.images.items()) + ([("label", subject.label)] if subject.label is not None else [])
    stats = []
    for role, path in files:
        try:
            st = os.stat(dio.split_channel(path)[0])
            stats.append((role, str(Path(path).resolve()), st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append((role, str(path), -1, -1))  # missing: reported when the subject is loaded
    blob = json.dumps(
        [PREPROCESS_VERSION, adapter_name, subject.id, list(size), modalities, sorted(label_values), stats]
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def resize_inplane(volume: np.ndarray, size: tuple[int, int], label: bool) -> np.ndarray:
    """Resize an (h, w, d) volume to (size[0], size[1], d); nearest for labels, linear for images.

    Images are low-pass filtered before downsampling with sigma = (factor - 1) / 2 per axis,
    the anti-aliasing rule of skimage.transform.resize.
    """
    h, w = volume.shape[:2]
    if (h, w) == tuple(size):
        return volume
    factors = (size[0] / h, size[1] / w, 1.0)
    if label:
        return zoom(volume, factors, order=0, mode="nearest", grid_mode=True)
    sigma = [max(0.0, (1 / f - 1) / 2) for f in factors]
    if any(sigma):
        volume = gaussian_filter(volume, sigma, mode="nearest")
    return zoom(volume, factors, order=1, mode="nearest", grid_mode=True)


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
        arrays[f"img_{modality}"] = np.moveaxis(resize_inplane(norm[..., keep], size, False), -1, 0)
    if label is not None:
        arrays["label"] = np.moveaxis(resize_inplane(label[..., keep].astype(np.int16), size, True), -1, 0)
    h, w, d = brain.shape
    resized_spacing = (spacing[0] * h / size[0], spacing[1] * w / size[1], spacing[2])
    with atomic_write(out) as fh:
        np.savez(
            fh,
            z=keep.astype(np.int32),
            spacing=np.asarray(resized_spacing, dtype=np.float64),
            volume_shape=np.asarray((size[0], size[1], d), dtype=np.int64),
            **{k: np.ascontiguousarray(v) for k, v in arrays.items()},
        )
    return None


def preprocess_subjects(
    adapter: DatasetAdapter,
    subjects: list[Subject],
    cache_dir: Path,
    size: tuple[int, int] = (64, 64),
    jobs: int = 1,
    skip_bad: bool = False,
) -> PreprocessResult:
    """Cache every subject once; returns ``{subject id: .npz path}`` as a ``PreprocessResult``.

    Every modality of the adapter is loaded and validated. Files are
    ``cache_dir/subjects/<key>.npz``; the key changes with any input file's path/size/mtime,
    ``size`` or ``PREPROCESS_VERSION``. ``jobs > 1`` uses a spawned process pool. Bad
    subjects: with ``skip_bad`` False a ``DataError`` lists all of them with their reasons;
    with True they are left out of the result and listed in ``result.bad`` (id -> reason).
    Arrays per file: ``img_<modality>`` (n, H, W) float32, ``label`` (n, H, W) int16 raw
    values (absent if unlabelled), ``z`` (n,), ``spacing`` (3,) mm after resize,
    ``volume_shape`` (H, W, D).
    """
    size = (int(size[0]), int(size[1]))
    ids = [s.id for s in subjects]
    if len(set(ids)) != len(ids):
        raise DataError(f"duplicate subject ids: {sorted({i for i in ids if ids.count(i) > 1})}")
    folder = Path(cache_dir) / "subjects"
    folder.mkdir(parents=True, exist_ok=True)
    modalities = adapter.modalities()
    paths = {
        s.id: folder / f"{cache_key(adapter.name, s, size, modalities, adapter.label_values)}.npz" for s in subjects
    }
    todo = [
        (s.id, (s, modalities, adapter.label_values, size, paths[s.id])) for s in subjects if not paths[s.id].is_file()
    ]
    errors: dict[str, str | None] = {}
    with tqdm(total=len(todo), desc="preprocess", unit="subject", disable=None) as bar:
        if jobs > 1 and len(todo) > 1:
            # spawn: forking a process whose torch/OpenMP thread pools are live can deadlock
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(min(jobs, len(todo)), mp_context=ctx) as pool:
                futures = {sid: pool.submit(_build, *args) for sid, args in todo}
                for sid, fut in futures.items():
                    errors[sid] = fut.result()
                    bar.update()
        else:
            for sid, args in todo:
                errors[sid] = _build(*args)
                bar.update()
    bad = {sid: reason for sid, reason in errors.items() if reason is not None}
    if bad and not skip_bad:
        listing = "; ".join(f"{sid}: {reason}" for sid, reason in bad.items())
        raise DataError(f"{len(bad)} bad subject(s) (--skip-bad skips them): {listing}")
    return PreprocessResult({sid: p for sid, p in paths.items() if sid not in bad}, bad)
