"""The ICBM152 2009 template bundled with nilearn, and seeded deformations of it (no download).

nilearn ships the skull-stripped ICBM 2009a nonlinear symmetric T1 template with its grey- and white-matter
probability maps (Fonov et al., NeuroImage 2011; ``nilearn.datasets.load_mni152_{,gm_,wm_}template``). CSF
probability is taken as ``1 - GM - WM`` inside the template's brain (T1 > 0), which covers ventricles and sulci.
A subject is the template under a seeded random affine (rotation up to 6 degrees, scale 0.9-1.1 per axis,
shift up to 3 mm) plus a smooth random displacement (up to 2-5 mm). Shared by ``mni152`` and ``brainsim``.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

Template = tuple[np.ndarray, np.ndarray, np.ndarray]


def load_template(spacing: tuple[float, float, float]) -> Template:
    """Template T1 (0..1), tissue probabilities (3, ...) as CSF/GM/WM, brain mask; cropped to the brain and
    smoothed for the target spacing (1 mm voxel coordinates of the crop).

    The Gaussian (FWHM = target spacing) models the partial volume of the coarser voxels and avoids aliasing.
    """
    from nilearn.datasets import load_mni152_gm_template, load_mni152_template, load_mni152_wm_template

    t1 = load_mni152_template(resolution=1).get_fdata(dtype=np.float32)
    gm = load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32)
    wm = load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32)
    inside = np.argwhere(t1 > 0)
    box = tuple(slice(max(lo - 8, 0), hi + 9) for lo, hi in zip(inside.min(0), inside.max(0)))  # brain + 8 mm
    t1, gm, wm = t1[box], gm[box], wm[box]
    brain = (t1 > 0).astype(np.float32)
    gm, wm = gm * brain, wm * brain
    tissues = np.stack([np.clip(1.0 - gm - wm, 0.0, 1.0) * brain, gm, wm])
    sigma = [s / 2.355 for s in spacing]
    smooth = [gaussian_filter(v, sigma) for v in (t1, *tissues, brain)]
    return smooth[0], np.stack(smooth[1:4]), smooth[4]


def tissue_means(t1: np.ndarray, tissues: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Mean template T1 of each tissue, over the voxels where it is the most probable one."""
    inside = brain > 0.5
    winner = tissues.argmax(0)[inside]
    return np.array([t1[inside][winner == k].mean() for k in range(3)])


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    field = gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return field / max(float(np.abs(field).max()), 1e-12)


def rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    rot = np.eye(3)
    for axes, angle in zip(((1, 2), (0, 2), (0, 1)), np.deg2rad(rng.uniform(-max_deg, max_deg, 3))):
        r = np.eye(3)
        (i, j), c, s = axes, np.cos(angle), np.sin(angle)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        rot = rot @ r
    return rot


def subject_coordinates(
    rng: np.random.Generator, centre: np.ndarray, shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> np.ndarray:
    """Template voxel (1 mm) coordinates sampled by each output voxel: random affine + smooth displacement."""
    grid = np.stack(np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij"))
    offset = (grid - ((np.asarray(shape) - 1) / 2)[:, None, None, None]) * np.asarray(spacing)[:, None, None, None]
    linear = rotation(rng, 6.0) @ np.diag(rng.uniform(0.9, 1.1, 3))
    mm = np.einsum("ij,j...->i...", linear, offset)
    shift = rng.uniform(-3.0, 3.0, 3)
    amp = rng.uniform(2.0, 5.0)
    warp = np.stack([amp * smooth_noise(rng, shape, 3.0) for _ in range(3)])
    return mm + (centre + shift)[:, None, None, None] + warp


def view_centre(brain: np.ndarray, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """Template voxel at the centre of a subject grid: the brain's box centre, the vertex kept in view."""
    extent = np.asarray(shape) * np.asarray(spacing)
    inside = np.argwhere(brain > 0.5)
    lo, hi = inside.min(0), inside.max(0)
    centre = (lo + hi) / 2
    centre[2] = max(centre[2], hi[2] + 4 - extent[2] / 2)  # keep the vertex in view; the brainstem may be cut
    return centre
