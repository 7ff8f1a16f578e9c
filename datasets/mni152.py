"""Synthetic subjects built from real anatomy: the ICBM152 2009 template bundled with nilearn (no download).

The anatomy is real, the subjects are synthetic: each subject is a seeded deformation of nilearn's bundled
ICBM152 template (``datasets.icbm152``), sampled on a 64x64x48 grid of 2.5x3x3 mm. Labels are the most
probable tissue (10 CSF, 150 GM, 250 WM, as iSeg-2019). Two contrasts:

- ``T1``: the template's real T1 intensities, with a per-subject tissue gain (0.94-1.06) and gamma (0.85-1.15);
- ``T2``: a synthetic T2-like image made by a tissue-wise mapping: the partial-volume mixture of
  tissue levels CSF 1.0 > GM 0.6 > WM 0.4 (T2 ordering, as the phantom's table), minus half the T1
  texture left after removing each tissue's mean T1 (so within-tissue T1 detail appears inverted).

Both get a smooth multiplicative bias field, Rician noise and int16 scaling; the volume is zero outside
the brain. Written in the iSeg-2019 layout (Analyze 7.5 ``.hdr/.img``, trailing singleton axis), so the
``iseg2019`` adapter reads it; ``mni152`` is that adapter with the data generated on first use.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import map_coordinates

from datasets.base import DATASETS, DataError
from datasets.generated import check_existing, generate_once
from datasets.icbm152 import Template, load_template, subject_coordinates, tissue_means, view_centre
from datasets.iseg import TRAINING, ISeg2019

MNI152_VERSION = 1
SHAPE = (64, 64, 48)
SPACING = (2.5, 3.0, 3.0)  # mm; the grid spans 160 x 192 x 144 mm around the 145 x 181 x 155 mm brain
LABELS = (10, 150, 250)  # CSF, GM, WM
T2_LEVELS = (1.0, 0.6, 0.4)  # CSF > GM > WM on T2 (Radiopaedia "MRI sequences (overview)")


def _finish(rng: np.random.Generator, image: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Bias field, Rician noise (Gudbjartsson & Patz, MRM 1995), int16 scaling, zero outside the brain."""
    u = np.meshgrid(*(np.linspace(-1, 1, n) for n in image.shape), indexing="ij", sparse=True)
    terms = [*u, u[0] * u[1], u[0] * u[2], u[1] * u[2], *(x**2 for x in u)]
    log_bias = sum(c * t for c, t in zip(rng.standard_normal(len(terms)), terms))
    image = image * np.exp(rng.uniform(0.05, 0.3) * log_bias / max(float(np.abs(log_bias).max()), 1e-12))
    sigma = rng.uniform(0.01, 0.04)
    noisy = np.hypot(image + sigma * rng.standard_normal(image.shape), sigma * rng.standard_normal(image.shape))
    scaled = np.clip(np.rint(noisy * rng.uniform(600.0, 1200.0)), 1, 32767)  # >= 1: 0 marks background
    return np.where(inside, scaled, 0).astype(np.int16)


def _subject(
    rng: np.random.Generator,
    template: Template,
    means: np.ndarray,
    centre: np.ndarray,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic subject: T1, T2 (int16) and labels (uint8 0/10/150/250)."""
    t1_tpl, tissues_tpl, brain_tpl = template
    coords = subject_coordinates(rng, centre, shape, spacing)

    def sample(volume: np.ndarray) -> np.ndarray:
        return map_coordinates(volume, coords, order=1, mode="constant", cval=0.0)

    t1 = sample(t1_tpl)
    p = np.stack([sample(v) for v in tissues_tpl])
    inside = sample(brain_tpl) > 0.5
    p = p / np.maximum(p.sum(0), 1e-6)
    label = np.where(inside, np.asarray(LABELS, dtype=np.uint8)[p.argmax(0)], 0).astype(np.uint8)
    gain = np.einsum("k,k...->...", rng.uniform(0.94, 1.06, 3), p)
    t1_img = np.clip(t1 * gain, 1e-3, None) ** rng.uniform(0.85, 1.15)
    residual = t1 - np.einsum("k,k...->...", means, p)
    levels = np.asarray(T2_LEVELS) * rng.uniform(0.95, 1.05, 3)
    t2_img = np.clip(np.einsum("k,k...->...", levels, p) - 0.5 * residual, 0.02, None)
    return _finish(rng, t1_img, inside), _finish(rng, t2_img, inside), label


def _save(array: np.ndarray, path: Path, spacing: tuple[float, float, float]) -> None:
    """Analyze 7.5 pair ``path`` (.hdr) + .img with a trailing singleton axis, as iSeg-2019 distributes."""
    nib.save(nib.AnalyzeImage(array[..., None], np.diag([*spacing, 1.0])), str(path))


def generate_mni152(
    root: Path,
    n_subjects: int = 24,
    shape: tuple[int, int, int] = SHAPE,
    spacing: tuple[float, float, float] = SPACING,
    seed: int = 0,
) -> Path:
    """Write ``n_subjects`` synthetic subjects at ``root`` in the iSeg-2019 layout; deterministic in ``seed``.

    Subject i depends only on (seed, i). Built in a temporary sibling folder and renamed into place, so
    ``root`` is either absent or complete; an existing ``root`` made with the same parameters is returned.
    """
    root = Path(root)
    if n_subjects < 1 or len(shape) != 3 or min(shape) < 8 or len(spacing) != 3 or min(spacing) <= 0:
        raise DataError(
            f"mni152: need n_subjects >= 1, a 3D shape >= 8 and positive spacing, got {n_subjects}, {shape}, {spacing}"
        )
    params = {
        "version": MNI152_VERSION,
        "n_subjects": n_subjects,
        "shape": [int(s) for s in shape],
        "spacing": [float(s) for s in spacing],
        "seed": seed,
    }
    if root.exists():
        check_existing(root, params, "mni152")
        return root
    template = load_template(tuple(params["spacing"]))
    means = tissue_means(*template)
    centre = view_centre(template[2], tuple(params["shape"]), tuple(params["spacing"]))

    def build(tmp: Path) -> None:
        folder = tmp / TRAINING
        folder.mkdir(parents=True)
        for i in range(1, n_subjects + 1):
            t1, t2, label = _subject(
                np.random.default_rng([seed, i]),
                template,
                means,
                centre,
                tuple(params["shape"]),
                tuple(params["spacing"]),
            )
            for tag, array in (("T1", t1), ("T2", t2), ("label", label)):
                _save(array, folder / f"subject-{i}-{tag}.hdr", tuple(params["spacing"]))

    return generate_once(root, params, "mni152", build)


def mni152_root(cache_dir: Path, seed: int = 0) -> Path:
    """``cache_dir/mni152-v1-s{seed}``, generated with the default parameters if absent."""
    return generate_mni152(Path(cache_dir) / f"mni152-v{MNI152_VERSION}-s{seed}", seed=seed)


@DATASETS.register("mni152")
class MNI152(ISeg2019):
    """SYNTHETIC subjects from the real ICBM152 2009 template (see module docstring); iSeg-2019 layout and labels."""

    @classmethod
    def default_root(cls, cache_dir: Path) -> Path:
        return mni152_root(cache_dir)
