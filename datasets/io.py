"""Volume reading and per-subject validation shared by every adapter (nibabel)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np

from datasets.base import DataError, Subject

CHANNEL_SEP = "::"


def split_channel(path: Path | str) -> tuple[Path, int | None]:
    """``FILE::C`` names channel C on the last axis of a 4D file (MSD); plain paths give None."""
    head, sep, tail = str(path).rpartition(CHANNEL_SEP)
    return (Path(head), int(tail)) if sep and tail.isdigit() else (Path(path), None)


def header_spacing(path: Path | str) -> tuple[float, float, float]:
    """Voxel spacing from the header only (no voxel data read); (1, 1, 1) if unreadable.

    Unreadable files are reported by the preprocessing, which validates every subject.
    """
    try:
        zooms = nib.load(str(split_channel(path)[0])).header.get_zooms()[:3]
        return tuple(float(z) for z in zooms)  # type: ignore[return-value]
    except Exception:
        return (1.0, 1.0, 1.0)


def load_volume(path: Path | str) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Read a NIfTI/Analyze volume (or ``FILE::C`` channel) as float32 and its spacing.

    Trailing singleton axes are squeezed (iSeg's Analyze files carry one).
    """
    file, channel = split_channel(path)
    try:
        img = nib.load(str(file))
        if channel is not None:
            if len(img.shape) != 4 or channel >= img.shape[3]:
                raise DataError(f"{file}: no channel {channel} on the last axis of shape {img.shape}")
            data = np.asarray(img.dataobj[..., channel], dtype=np.float32)
        else:
            data = np.asarray(img.dataobj, dtype=np.float32)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{file}: file not found") from None
    except Exception as exc:  # nibabel raises many types for truncated/corrupt files
        reason = " ".join(str(exc).split())
        raise DataError(f"{file}: unreadable ({type(exc).__name__}: {reason})") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"{file}: expected a 3D volume, got shape {data.shape}")
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
        label_f, label_spacing = load_volume(subject.label)
        if ref_shape is not None and label_f.shape != ref_shape:
            raise DataError(f"{subject.label}: label shape {label_f.shape} differs from {ref_path.name} {ref_shape}")
        if ref_spacing is not None and not np.allclose(label_spacing, ref_spacing, atol=1e-3):
            raise DataError(
                f"{subject.label}: label spacing {label_spacing} differs from {ref_path.name} {ref_spacing}"
            )
        if not np.all(label_f == np.round(label_f)):
            raise DataError(f"{subject.label}: label holds non-integer values")
        label = label_f.astype(np.int32)
        bad = sorted(set(np.unique(label).tolist()) - set(label_values))
        if bad:
            raise DataError(f"{subject.label}: label values {bad} outside {sorted(label_values)}")
    return images, label, ref_spacing or (1.0, 1.0, 1.0)
