"""Per-subject, per-region Dice and HD95 with the empty-mask rules of the README."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance


def dice_hd95(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float, float]) -> tuple[float, float]:
    """Dice and 95th-percentile Hausdorff distance (mm) of two boolean 3D masks.

    Diverges from MONAI on empty masks, which give NaN/inf there; we follow the
    suite's fixed rules instead (never NaN):
    both empty -> Dice 1, HD95 0; exactly one empty -> Dice 0, HD95 = the volume diagonal in mm.
    """
    p, t = pred.astype(bool), truth.astype(bool)
    if not p.any() and not t.any():
        return 1.0, 0.0
    if not p.any() or not t.any():
        return 0.0, math.dist((0.0, 0.0, 0.0), [n * s for n, s in zip(p.shape, spacing)])
    pt, tt = (torch.from_numpy(a)[None, None].float() for a in (p, t))
    # Dice = 2|P & T| / (|P| + |T|) (Dice 1945); HD95 as in the BraTS evaluation (Bakas et al. 2018).
    dice = compute_dice(pt, tt, include_background=True, ignore_empty=False).item()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI deprecation chatter about argument names
        hd = compute_hausdorff_distance(pt, tt, include_background=True, percentile=95, spacing=list(spacing))
    return float(dice), float(hd.item())
