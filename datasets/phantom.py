"""Procedural brain-tumour phantom written in the FeTS 2021 layout (no download).

Each subject is an ellipsoidal, skull-stripped brain (CSF rim and ventricles,
grey-matter ribbon, white matter) under a smooth random deformation, with a
lobulated tumour: necrotic core (1), enhancing rim (4), oedema (2). Four MRI
contrasts are rendered per subject; each partition (institution) has its own
scanner: per-tissue contrast gamma, noise, bias field, blur and global scale.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter, zoom

from datasets.base import DataError
from datasets.generated import generate_once

PHANTOM_VERSION = 2
MODALITIES = ("t1", "t1ce", "t2", "flair")
# Tissue codes of the intensity table below.
CSF, GM, WM, NCR, ED, ET = range(6)
# Relative intensity per tissue [CSF, GM, WM, NCR, ED, ET]. Orderings follow standard MRI
# contrast tables (e.g. Radiopaedia "MRI sequences (overview)": T1 WM>GM>CSF, T2 CSF>GM>WM,
# FLAIR = T2 with CSF suppressed) and the BraTS label definitions (Menze et al., IEEE TMI
# 2015, Sec. II: ET hyperintense on T1Gd, NCR hypointense on T1Gd, ED hyperintense on T2/FLAIR).
TISSUE_INTENSITY = {
    "t1": (0.15, 0.55, 0.80, 0.20, 0.45, 0.50),
    "t1ce": (0.15, 0.55, 0.80, 0.20, 0.45, 1.00),
    "t2": (1.00, 0.60, 0.40, 0.90, 0.85, 0.65),
    "flair": (0.08, 0.55, 0.45, 0.40, 0.95, 0.75),
}


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise scaled to max |value| = 1.

    Large sigmas are filtered on a grid coarser by ``f = sigma // 2`` and linearly upsampled.
    """
    f = max(1, int(sigma // 2))
    if f == 1:
        field = gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    else:
        coarse = gaussian_filter(rng.standard_normal([-(-n // f) + 1 for n in shape]), sigma / f, mode="wrap")
        field = zoom(coarse, f, order=1)[tuple(slice(0, n) for n in shape)]
    return field / max(float(np.abs(field).max()), 1e-12)


def _scanner(seed: int, group: int) -> dict:
    """Acquisition parameters of one institution (deterministic in seed and group)."""
    rng = np.random.default_rng([seed, 1_000_003, group])
    return {
        "gamma": {m: rng.uniform(0.75, 1.35) for m in MODALITIES},  # per-contrast tissue gamma
        "tissue_gain": {m: rng.uniform(0.92, 1.08, size=6) for m in MODALITIES},
        "scale": {m: rng.uniform(50.0, 400.0) for m in MODALITIES},
        "offset": {m: rng.uniform(0.02, 0.15) for m in MODALITIES},
        "noise": rng.uniform(0.015, 0.06),
        "bias": rng.uniform(0.05, 0.35),
        "blur": rng.uniform(0.4, 1.0),
    }


def _anatomy(
    rng: np.random.Generator, shape: tuple[int, int, int], shared: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Tissue map (-1 outside the brain, else CSF/GM/WM/NCR/ED/ET codes) and the BraTS label map.

    ``shared`` (aligned phantom): a generator seeded the same for every subject draws the brain's shape,
    deformation and folding and the tumour's site, so subjects correspond voxel by voxel (as atlas-registered
    BraTS/FeTS scans do) and only the tumour's jitter, size and lobulation vary. ``None``: all from ``rng``.
    """
    brain_rng = rng if shared is None else shared
    dims = np.asarray(shape, dtype=float)
    centre = (dims - 1) / 2 + brain_rng.uniform(-0.04, 0.04, 3) * dims
    axes = dims / 2 * brain_rng.uniform(0.78, 0.9, 3)
    grid = np.stack(np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij"))
    # Smooth random displacement field (voxels): the anatomy is evaluated at warped coordinates.
    amp = 0.08 * float(axes.min())
    warped = grid + np.stack([amp * _smooth_noise(brain_rng, shape, float(dims.min()) / 5) for _ in range(3)])
    rel = (warped - centre[:, None, None, None]) / axes[:, None, None, None]
    rho = np.sqrt((rel**2).sum(0))  # normalised ellipsoid radius: brain is rho <= 1
    fold = _smooth_noise(brain_rng, shape, 1.5)  # gyrification of the grey/white boundary
    tissue = np.full(shape, -1, dtype=np.int8)
    tissue[rho <= 1.0] = CSF
    tissue[rho <= 0.92] = GM
    tissue[rho <= 0.72 + 0.07 * fold] = WM
    brain = rho <= 1.0
    for side in (-1.0, 1.0):  # lateral ventricles
        v = rel - np.array([side * 0.2, 0.05, 0.05])[:, None, None, None]
        tissue[((v / np.array([0.14, 0.4, 0.3])[:, None, None, None]) ** 2).sum(0) <= 1.0] = CSF
    # Tumour: lobulated blob; size varies (a quarter of the subjects get a small one).
    if shared is None:
        while True:
            t_rel = rng.uniform(-0.6, 0.6, 3)
            if np.sqrt((t_rel**2).sum()) <= 0.6:
                break
        small = rng.random() < 0.25
    else:  # one site for every subject (off-centre, in the white matter), moved by a few voxels at most
        t_rel = np.array([0.3, -0.2, 0.1]) + rng.uniform(-0.05, 0.05, 3)
        small = False
    t_centre = centre + t_rel * axes
    radius = float(np.exp(np.log(axes).mean())) * (rng.uniform(0.08, 0.15) if small else rng.uniform(0.15, 0.42))
    d = np.sqrt(((warped - t_centre[:, None, None, None]) ** 2).sum(0)) / radius
    d = d * (1.0 + 0.3 * _smooth_noise(rng, shape, max(radius / 2, 1.0)))
    label = np.zeros(shape, dtype=np.uint8)
    label[brain & (d < 1.0 + rng.uniform(0.5, 1.1))] = 2
    label[brain & (d < 1.0)] = 4
    label[brain & (d < rng.uniform(0.45, 0.7))] = 1
    for value, code in ((2, ED), (4, ET), (1, NCR)):
        tissue[label == value] = code
    return tissue, label


def _render(
    rng: np.random.Generator, tissue: np.ndarray, modality: str, scanner: dict, jitter: np.ndarray
) -> np.ndarray:
    """One contrast: tissue intensities -> partial-volume blur -> bias -> Rician noise -> scanner scale."""
    base = np.asarray(TISSUE_INTENSITY[modality]) * jitter * scanner["tissue_gain"][modality]
    lut = np.append(np.clip(base, 1e-3, None) ** scanner["gamma"][modality], 0.0)  # index -1: background
    image = gaussian_filter(lut[tissue], scanner["blur"])  # partial-volume effect at tissue borders
    u = [np.linspace(-1, 1, n) for n in tissue.shape]
    uu = np.meshgrid(*u, indexing="ij", sparse=True)
    coef = rng.standard_normal(9)
    log_bias = sum(c * t for c, t in zip(coef, [*uu, uu[0] * uu[1], uu[0] * uu[2], uu[1] * uu[2], *(x**2 for x in uu)]))
    image = image * np.exp(scanner["bias"] * log_bias / max(float(np.abs(log_bias).max()), 1e-12))
    sigma = scanner["noise"]  # Rician magnitude noise (Gudbjartsson & Patz, MRM 1995)
    image = np.sqrt(
        (image + sigma * rng.standard_normal(image.shape)) ** 2 + (sigma * rng.standard_normal(image.shape)) ** 2
    )
    image = (image + scanner["offset"][modality]) * scanner["scale"][modality]
    return np.where(tissue >= 0, image, 0.0).astype(np.float32)  # skull-stripped: 0 outside the brain


def _params(n_subjects: int, n_groups: int, shape: tuple[int, int, int], seed: int, aligned: bool) -> dict:
    params = {
        "version": PHANTOM_VERSION,
        "n_subjects": n_subjects,
        "n_groups": n_groups,
        "shape": list(shape),
        "seed": seed,
    }
    return {**params, "aligned": True} if aligned else params  # the default's marker stays as it was


def _save(array: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(array, np.eye(4))  # 1 mm isotropic spacing
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


def generate_phantom(
    root: Path,
    n_subjects: int = 40,
    n_groups: int = 4,
    shape: tuple[int, int, int] = (64, 64, 32),
    seed: int = 0,
    aligned: bool = False,
) -> Path:
    """Write the phantom at ``root`` in the FeTS 2021 layout; deterministic in ``seed``.

    ``aligned``: every subject has the same brain and tumour site (see ``_anatomy``), for the location-level
    TRM map, which assumes per-pixel anatomical correspondence; the default phantom's brains and tumours move.

    Subject i belongs to partition ``i % n_groups`` (``partitioning_1.csv``);
    ``partitioning_2.csv`` splits each partition in two. Built in a temporary
    sibling folder and renamed into place, so ``root`` is either absent or
    complete; a concurrent generator that loses the rename discards its copy.
    An existing ``root`` generated with the same parameters is returned as is.
    """
    root = Path(root)
    if n_subjects < 1 or n_groups < 1 or len(shape) != 3 or min(shape) < 8:
        raise DataError(
            f"phantom: need n_subjects, n_groups >= 1 and a 3D shape >= 8; got {n_subjects}, {n_groups}, {shape}"
        )
    params = _params(n_subjects, n_groups, tuple(int(s) for s in shape), seed, aligned)

    def build(tmp: Path) -> None:
        rows1, rows2 = [], []
        for i in range(n_subjects):
            sid = f"FeTS21_Training_{i + 1:03d}"
            group = i % n_groups
            rows1.append((sid, f"{group + 1:02d}"))
            rows2.append((sid, f"{2 * group + (i // n_groups) % 2 + 1:02d}"))
            rng = np.random.default_rng([seed, i])
            shared = np.random.default_rng([seed, 7_777_777]) if aligned else None  # same stream for each subject
            tissue, label = _anatomy(rng, tuple(params["shape"]), shared)
            scanner = _scanner(seed, group)
            jitter = rng.uniform(0.97, 1.03, size=6)  # per-subject biological variation
            folder = tmp / sid
            folder.mkdir()
            for modality in MODALITIES:
                _save(_render(rng, tissue, modality, scanner, jitter), folder / f"{sid}_{modality}.nii.gz")
            _save(label, folder / f"{sid}_seg.nii.gz")
        for n, rows in ((1, rows1), (2, rows2)):
            pd.DataFrame(rows, columns=["Subject_ID", "Partition_ID"]).to_csv(
                tmp / f"partitioning_{n}.csv", index=False
            )

    return generate_once(root, params, "phantom", build)


def phantom_root(cache_dir: Path, seed: int = 0, aligned: bool = False) -> Path:
    """``cache_dir/phantom-v{PHANTOM_VERSION}-s{seed}[-aligned]``, generated with the default parameters if absent."""
    name = f"phantom-v{PHANTOM_VERSION}-s{seed}" + ("-aligned" if aligned else "")
    return generate_phantom(Path(cache_dir) / name, seed=seed, aligned=aligned)
