"""The loss every method shares: MONAI's DiceCELoss (soft Dice + cross-entropy)."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss

# Batch soft Dice over foreground classes + pixel CE, as nnU-Net trains
# (Milletari et al. 2016, V-Net, eq. 1; Isensee et al. 2021, nnU-Net, loss section).
_dice_ce = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)


def soft_dice_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The unweighted soft-Dice term alone; ``labels`` (B, H, W) int."""
    return _dice_ce.dice(logits, labels.unsqueeze(1))


def base_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Soft Dice + mean pixel cross-entropy (DiceCELoss, lambda_dice = lambda_ce = 1)."""
    return _dice_ce(logits, labels.unsqueeze(1).long())
