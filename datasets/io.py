"""Volume reading and per-subject validation shared by every adapter (nibabel)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np

from datasets.base import DataError, Subject


def load_volume(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Read a NIfTI/Analyze volume as float32 (trailing singleton axes squeezed) and its spacing."""
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Exception as exc:  # nibabel raises many types for truncated/corrupt files
        raise DataError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3D volume, got shape {data.shape}")
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    return data, zooms  # type: ignore[return-value]


def load_subject(
    subject: Subject, modalities: Iterable[str], label_values: frozenset[int]
) -> tuple[dict[str, np.ndarray], np.ndarray | None, tuple[float, float, float]]:
    """Read and validate a subject's modalities and label; errors name the file.

    Checks: each file present and readable, equal shapes, equal spacing (to 1e-3),
    label values inside ``label_values``.
    """
    images: dict[str, np.ndarray] = {}
    ref_shape = ref_spacing = ref_path = None
    for modality in modalities:
        path = subject.images.get(modality)
        if path is None:
            raise DataError(f"subject {subject.id}: missing modality {modality!r}")
        data, spacing = load_volume(path)
        if ref_shape is None:
            ref_shape, ref_spacing, ref_path = data.shape, spacing, path
        elif data.shape != ref_shape:
            raise DataError(f"{path}: shape {data.shape} differs from {ref_path.name} {ref_shape}")
        elif not np.allclose(spacing, ref_spacing, atol=1e-3):
            raise DataError(f"{path}: spacing {spacing} differs from {ref_path.name} {ref_spacing}")
        images[modality] = data
    label = None
    if subject.label is not None:
        label_f, _ = load_volume(subject.label)
        if ref_shape is not None and label_f.shape != ref_shape:
            raise DataError(f"{subject.label}: label shape {label_f.shape} differs from {ref_path.name} {ref_shape}")
        if not np.all(label_f == np.round(label_f)):
            raise DataError(f"{subject.label}: label holds non-integer values")
        label = label_f.astype(np.int32)
        bad = sorted(set(np.unique(label).tolist()) - set(label_values))
        if bad:
            raise DataError(f"{subject.label}: label values {bad} outside {sorted(label_values)}")
    return images, label, ref_spacing or (1.0, 1.0, 1.0)
