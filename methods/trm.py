"""Transfer Risk Map weighted fine-tuning (Duan et al., ICASSP 2025; reconstruction in DESIGN.md)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from datasets.slices import SliceDataset
from methods.base import HParam, Method, MethodConfigError, register_method
from methods.losses import soft_dice_loss
from methods.transferability import (
    compute_joint,
    compute_risk_maps,
    leep_conditional,
    nce_from_counts,
)

WEIGHT_KEY = "trm_weight"


def risk_weighted_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, normalize: str = "foreground"
) -> torch.Tensor:
    """Mean over images of sum_p W_p * CE_p / max(|F_i|, 1) (DESIGN.md, TRM step 7).

    ``normalize="all"`` divides by the image's pixel count instead of its foreground
    count (the ablation separating the map from foreground normalisation).
    """
    ce = F.cross_entropy(logits, labels.long(), reduction="none")  # (B, *spatial)
    per_image = (weights * ce).flatten(1).sum(1)
    if normalize == "foreground":
        denom = (labels != 0).flatten(1).sum(1).clamp(min=1)
    else:
        denom = torch.full_like(per_image, ce[0].numel())
    return (per_image / denom).mean()


@register_method("trm")
class TransferRiskMap(Method):
    """Per-pixel risk weights from the source model's pixel LEEP on the cross-entropy term."""

    hparams = {
        "risk": HParam(
            "complement", "risk from e: 1 - e, or -log e min-max scaled per image", ("complement", "neglog")
        ),
        "weighting": HParam(
            "linear", "W = 1 + alpha R (linear), beta ** R (exp), or 1 (none)", ("linear", "exp", "none")
        ),
        "alpha": HParam(1.0, "slope of the linear weighting"),
        "beta": HParam(2.0, "base of the exponential weighting"),
        # Default "all", not DESIGN.md's "foreground": dividing a sum over every pixel by the foreground
        # count blows up on slices with little or no tumour and collapsed training to all-background on
        # the default suite (README, "Transfer Risk Map"); "foreground" stays available as an ablation.
        "normalize": HParam(
            "all", "divide each image's weighted CE by its pixel count (all) or foreground count", ("all", "foreground")
        ),
    }

    def prepare(
        self, source_model: nn.Module | None, target_model: nn.Module, train_data: Any, device: torch.device
    ) -> None:
        if source_model is None:
            raise MethodConfigError("method 'trm' needs a source model (it cannot run from random init)")
        if not isinstance(train_data, SliceDataset):
            raise MethodConfigError("method 'trm' needs a SliceDataset to attach its maps to")
        super().prepare(source_model, target_model, train_data, device)
        weights, self.scores = self._maps(source_model, train_data, target_model.num_classes, device)
        train_data.attach(WEIGHT_KEY, weights)

    def _maps(
        self, source: nn.Module, data: SliceDataset, num_classes: int, device: torch.device
    ) -> tuple[np.ndarray, dict[str, float]]:
        """Weight maps and scores, cached beside the slice cache by source weights, slices and params."""
        path = self._cache_path(source, data)
        if path is not None and path.exists():
            with np.load(path) as f:
                return f["weights"], {"leep": float(f["leep"]), "nce": float(f["nce"])}
        plain = SliceDataset(data.slices, augment=False)  # maps are computed un-augmented, in slice order
        loader = DataLoader(plain, batch_size=32, shuffle=False)
        joint, nce_counts = compute_joint(source, loader, num_classes, device)
        p = self.params
        weights, leep = compute_risk_maps(
            source,
            loader,
            leep_conditional(joint),
            risk=p["risk"],
            weighting=p["weighting"],
            alpha=p["alpha"],
            beta=p["beta"],
            device=device,
        )
        scores = {"leep": float(leep), "nce": float(nce_from_counts(nce_counts))}
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
            os.close(fd)
            with open(tmp, "wb") as fh:
                np.savez(fh, weights=weights, **scores)
            os.replace(tmp, path)
        return weights, scores

    def _cache_path(self, source: nn.Module, data: SliceDataset) -> Path | None:
        cache_dir = getattr(self, "cache_dir", None)
        if cache_dir is None:
            return None
        h = hashlib.sha1(repr(sorted(self.params.items())).encode())
        for tensor in source.state_dict().values():
            h.update(tensor.detach().cpu().numpy().tobytes())
        h.update(data.slices.images.tobytes())
        h.update(data.slices.labels.tobytes())
        return Path(cache_dir) / "riskmaps" / f"{h.hexdigest()[:20]}.npz"

    def loss(self, batch: dict[str, torch.Tensor], logits: torch.Tensor, target_model: nn.Module) -> torch.Tensor:
        # TRM training loss = risk-weighted CE + the unweighted soft Dice every method uses (DESIGN.md, step 7).
        ce = risk_weighted_loss(logits, batch["label"], batch[WEIGHT_KEY], self.params["normalize"])
        return ce + soft_dice_loss(logits, batch["label"])

    def result_columns(self) -> dict[str, Any]:
        return dict(self.scores)
