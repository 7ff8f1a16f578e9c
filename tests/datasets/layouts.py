"""Writers of tiny datasets in each challenge's exact on-disk layout (nibabel, into tmp_path), and CLI helpers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import yaml

import datasets.brats  # noqa: F401 - importing registers the adapters
import datasets.iseg  # noqa: F401
import datasets.mni152  # noqa: F401
import datasets.msd  # noqa: F401

SHAPE = (24, 24, 12)
SPACING = (1.0, 1.0, 1.0)


def volumes(
    seed: int, values: tuple[int, ...], channels: int, shape: tuple[int, ...] = SHAPE
) -> tuple[list[np.ndarray], np.ndarray]:
    """``channels`` skull-stripped images (0 outside an ellipsoid) and a label with nested shells of ``values``."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    centre = rng.uniform(-0.1, 0.1, 3)
    rho = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
    label = np.zeros(shape, dtype=np.uint8)
    fg = [v for v in values if v != 0]
    for i, value in enumerate(fg):  # outer shell first: the first value is the largest region
        label[rho <= 0.8 * (1 - i / (len(fg) + 1))] = value
    brain = rho <= 0.9
    images = [
        np.where(brain, 100 + (c + 1) * label + rng.normal(0, 5, shape), 0).astype(np.float32) for c in range(channels)
    ]
    return images, label


def save_nifti(path: Path, array: np.ndarray, spacing: tuple[float, ...] = SPACING) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([*spacing[:3], 1.0])), str(path))
    return path


def save_analyze(path: Path, array: np.ndarray, spacing: tuple[float, ...] = SPACING) -> Path:
    """``path`` is the .hdr or .img of the pair; written with iSeg's trailing singleton axis."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.AnalyzeImage(array[..., None], np.diag([*spacing[:3], 1.0])), str(path.with_suffix(".hdr")))
    return path


def rewrite(path: Path, array: np.ndarray, spacing: tuple[float, ...] = SPACING) -> None:
    """Replace a dataset file with ``array`` in the same format (Analyze pair or NIfTI)."""
    (save_analyze if path.suffix in (".hdr", ".img") else save_nifti)(path, array, spacing)


def truncate(path: Path) -> None:
    """Cut a file to half its size (for an Analyze pair, the .img holding the voxels)."""
    target = path.with_suffix(".img") if path.suffix == ".hdr" else path
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])


def delete(path: Path) -> None:
    for p in [path.with_suffix(".hdr"), path.with_suffix(".img")] if path.suffix in (".hdr", ".img") else [path]:
        p.unlink(missing_ok=True)


BRATS_NAMES = {  # release -> (subject id of case i, separator, file suffixes, label values)
    "2020": (lambda i: f"BraTS20_Training_{i:03d}", "_", ("t1", "t1ce", "t2", "flair"), (0, 2, 1, 4)),
    "2021": (lambda i: f"BraTS2021_{i:05d}", "_", ("t1", "t1ce", "t2", "flair"), (0, 2, 1, 4)),
    "2023": (lambda i: f"BraTS-GLI-{i:05d}-000", "-", ("t1n", "t1c", "t2w", "t2f"), (0, 2, 1, 3)),
}


def make_brats(root: Path, release: str = "2021", n: int = 6, unlabelled: int = 0) -> Path:
    """``root/<id>/<id><sep>{modalities,seg}.nii.gz``; the last ``unlabelled`` subjects have no seg."""
    name, sep, suffixes, values = BRATS_NAMES[release]
    for i in range(n + unlabelled):
        sid = name(i + 1)
        images, label = volumes(i, values, len(suffixes))
        for suffix, image in zip(suffixes, images):
            save_nifti(root / sid / f"{sid}{sep}{suffix}.nii.gz", image)
        if i < n:
            save_nifti(root / sid / f"{sid}{sep}seg.nii.gz", label)
    return root


def make_iseg(root: Path, n: int = 6, validation: int = 0) -> Path:
    """``root/iSeg-2019-Training/subject-N-{T1,T2,label}.{hdr,img}`` (+ unlabelled ``iSeg-2019-Validation``)."""
    for i in range(1, n + validation + 1):
        folder = root / ("iSeg-2019-Training" if i <= n else "iSeg-2019-Validation")
        images, label = volumes(i, (0, 10, 150, 250), 2)
        save_analyze(folder / f"subject-{i}-T1.hdr", images[0].astype(np.int16))
        save_analyze(folder / f"subject-{i}-T2.hdr", images[1].astype(np.int16))
        if i <= n:
            save_analyze(folder / f"subject-{i}-label.hdr", label)
    return root


MSD_JSON = {
    "v1": {
        "name": "BrainTumour",
        "modality": {"0": "FLAIR", "1": "T1w"},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
    },
    "v2": {
        "channel_names": {"0": "T2", "1": "ADC"},
        "labels": {"background": 0, "PZ": 1, "TZ": 2, "gland": [1, 2]},
        "numTraining": 6,
        "file_ending": ".nii.gz",
    },
}


def make_msd(root: Path, version: str = "v2", four_d: bool = False, n: int = 6) -> Path:
    """MSD (4D ``imagesTr/CASE.nii.gz``, channels last) or nnU-Net (``imagesTr/CASE_000C.nii.gz``) raw folder."""
    meta = MSD_JSON[version]
    channels = len(meta.get("channel_names", meta.get("modality")))
    values = (0, 1, 2, 3) if version == "v1" else (0, 1, 2)
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(meta))
    for i in range(n):
        case = f"case_{i:03d}"
        images, label = volumes(i, values, channels)
        if four_d:
            save_nifti(root / "imagesTr" / f"{case}.nii.gz", np.stack(images, axis=-1))
        else:
            for c, image in enumerate(images):
                save_nifti(root / "imagesTr" / f"{case}_{c:04d}.nii.gz", image)
        save_nifti(root / "labelsTr" / f"{case}.nii.gz", label)
    (root / "imagesTr" / "._case_000.nii.gz").write_bytes(b"\0\5\26\7 macOS resource fork")  # MSD archive debris
    return root


def tiny_suite(path: Path, dataset: str, source: str, target: str) -> Path:
    """A one-cell suite: 2 steps, 32x32 slices, batch 2, no augmentation."""
    suite = {
        "name": "tiny",
        "dataset": dataset,
        "methods": ["finetune"],
        "seeds": [0],
        "budget": {"source_steps": 2, "target_steps": 2, "batch_size": 2, "size": 32, "augment": False},
        "transfers": [{"source": source, "target": target}],
    }
    path.write_text(yaml.safe_dump(suite))
    return path


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha1 of every file below ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
