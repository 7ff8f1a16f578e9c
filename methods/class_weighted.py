"""Class-weighted Dice + CE: the control that up-weights rare (foreground) classes without any map."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from datasets.slices import SliceDataset
from methods.base import Method, MethodConfigError, RunContext, register_method
from methods.losses import soft_dice_loss


def median_frequency_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """w_c = median_c(f_c) / f_c over the classes present, f_c = pixel share of class c; absent classes get 0.

    Median-frequency balancing (Eigen and Fergus, ICCV 2015, sec. 4.1). ``labels``: any int array.
    """
    counts = np.bincount(labels.reshape(-1).astype(np.int64), minlength=num_classes)[:num_classes]
    if counts.sum() == 0:
        raise ValueError("class weights need at least one labelled pixel")
    freq = counts / counts.sum()
    present = freq > 0
    weights = np.zeros(num_classes)
    weights[present] = np.median(freq[present]) / freq[present]
    return weights


@register_method("class-weighted")
class ClassWeighted(Method):
    """Fine-tuning on Dice + CE with median-frequency class weights from the target training slices (no map).

    The control for TRM: does up-weighting the foreground alone explain a TRM gain?
    """

    def prepare(self, run: RunContext) -> None:
        target_model, train_data, device = run.target_model, run.train_data, run.device
        if not isinstance(train_data, SliceDataset):
            raise MethodConfigError(f"method {self.name!r} needs a SliceDataset to count its classes")
        super().prepare(run)
        weights = median_frequency_weights(train_data.slices.labels, target_model.num_classes)
        self.class_weights = torch.as_tensor(weights, dtype=torch.float32, device=device)

    def loss(self, batch: dict[str, torch.Tensor], logits: torch.Tensor, target_model: nn.Module) -> torch.Tensor:
        # weighted mean CE as torch defines it (sum_p w_{y_p} CE_p / sum_p w_{y_p}) + the shared soft Dice
        labels = batch["label"]
        ce = F.cross_entropy(logits, labels.long(), weight=self.class_weights.to(logits.dtype))
        return ce + soft_dice_loss(logits, labels)
