"""Streaming passes of a frozen source model over the target data: LEEP joint, NCE counts, pixel
risk maps and the location LEEP map (README, "Transfer Risk Map"), on any device, with no host
synchronisation per batch. ``batches`` also serves the estimators' pass (``methods.estimators``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods import leep_kernels as K
from methods import transferability as T


class LabelRange:
    """Running label min/max kept on the device, checked once at the end (no per-batch host sync)."""

    def __init__(self) -> None:
        self.stats: Tensor | None = None  # (-min, max)

    def update(self, labels: Tensor) -> None:
        low, high = torch.aminmax(labels)
        block = torch.stack([-low.long(), high.long()])
        self.stats = block if self.stats is None else torch.maximum(self.stats, block)

    def check(self, num_classes: int) -> None:
        if self.stats is None:
            raise ValueError("loader yielded no batches")
        neg_low, high = self.stats.tolist()
        if -neg_low < 0 or high >= num_classes:
            raise ValueError(f"labels must lie in 0..{num_classes - 1}, found range {-neg_low}..{high}")


def batches(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    num_classes: int,
    device: torch.device,
    seen: LabelRange,
    *,
    features: bool = False,
    hard: bool = False,
) -> Iterator[tuple[Mapping[str, Any], Tensor, Tensor, Tensor | None]]:
    """(batch, probs (B, K, *spatial), labels (B, *spatial), features) on ``device``; probs = softmax of the
    logits, or with ``hard`` its one-hot argmax. With ``features`` the model is run as ``head(body(x))`` and its
    body's output (B, D, *spatial), the per-pixel features before the head, is returned too (else None)."""
    for batch in loader:
        images = batch["image"].to(device, non_blocking=True)
        feats = model.body(images) if features else None
        logits = model.head(feats) if features else model(images)
        probs = torch.softmax(logits.float(), 1)  # docs/design.md §TRM: theta = softmax(f_s(x))
        if hard:
            probs = F.one_hot(K.hard(probs), probs.shape[1]).movedim(-1, 1).float()
        labels = batch["label"].to(device, non_blocking=True)
        T._check_shapes(probs, labels, num_classes)
        seen.update(labels)
        yield batch, probs, labels, feats


def _loader_compile(compile: bool | None, loader: Iterable[Any], first: Tensor) -> bool:
    """Backend for a whole pass: ``auto`` weighs the dataset's pixel count, not one batch's."""
    images = len(getattr(loader, "dataset", ()))
    return K.use_compile(compile, images * first[0].numel(), first.device)


@torch.inference_mode()
def compute_joint(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    num_classes: int,
    device: torch.device | str,
    *,
    compile: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """Pass 1 over the target data: LEEP joint (C, K) float64 and NCE counts (C, K) int64, on ``device``.

    ``model`` is a frozen source network in eval mode mapping ``batch["image"]`` to logits (B, K, *spatial).
    """
    device = torch.device(device)
    joint = counts = None
    fused = False
    seen = LabelRange()
    for _, probs, labels, _ in batches(model, loader, num_classes, device, seen):
        x, lab = K.flat(probs, labels)
        if joint is None:
            fused = _loader_compile(compile, loader, lab)
            joint = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, device=device)
            counts = torch.zeros(num_classes, x.shape[1], dtype=torch.int64, device=device)
        joint += K.joint(x, lab, num_classes, fused)
        counts += T.nce_counts(K.hard(x), lab, x.shape[1], num_classes, validate=False)
    seen.check(num_classes)
    return joint, counts


@torch.inference_mode()
def compute_risk_maps(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    conditional: Tensor,
    risk: str = "complement",
    weighting: str = "linear",
    alpha: float = 1.0,
    beta: float = 2.0,
    *,
    device: torch.device | str,
    compile: bool | None = None,
    hard: bool = False,
) -> tuple[np.ndarray, float]:
    """Pass 2: pixel-weight maps (N, *spatial) float16 in dataset order (``batch["index"]``) and the LEEP.

    Maps live in one preallocated device buffer and are copied to the host once, at the end. With ``hard`` the
    source probabilities are the one-hot argmax, so e = P(y|z) at the hard prediction and, with the conditional
    of the NCE counts, the LEEP returned is the NCE (Tran et al., ICCV 2019: mean log P(y|z) over the samples).
    """
    device = torch.device(device)
    T.weights_from_e(torch.ones(1), risk, weighting, alpha, beta)  # fail fast on bad settings
    if conditional.ndim != 2:
        raise ValueError(f"conditional must be a (C, K) matrix, got shape {tuple(conditional.shape)}")
    T._check_conditional(conditional, conditional.shape[1])
    num_classes = conditional.shape[0]
    cond = conditional.to(device=device, dtype=torch.float32)
    size = len(loader.dataset)  # type: ignore[attr-defined]
    maps = None
    filled = torch.zeros(size, dtype=torch.bool, device=device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    pixels = 0
    fused = False
    seen = LabelRange()
    for batch, probs, labels, _ in batches(model, loader, num_classes, device, seen, hard=hard):
        x, lab = K.flat(probs, labels)
        if x.shape[1] != cond.shape[1]:
            raise ValueError(f"model gives {x.shape[1]} source classes, conditional has {cond.shape[1]}")
        if "index" not in batch:
            raise ValueError("batches need an 'index' entry to put maps in dataset order")
        if maps is None:
            fused = _loader_compile(compile, loader, lab)
            maps = torch.empty((size, *batch["label"].shape[1:]), dtype=torch.float16, device=device)
        e = K.expected(x, lab, cond, fused).view(batch["label"].shape)
        total += torch.log(e.clamp_min(K.EPS)).sum(dtype=torch.float64)  # LEEP, eq. (2), pixels as samples
        pixels += e.numel()
        weights = T.weights_from_e(e, risk, weighting, alpha, beta)
        index = torch.as_tensor(batch["index"]).to(device, non_blocking=True)
        maps.index_copy_(0, index, weights.to(torch.float16))
        filled[index] = True
    seen.check(num_classes)
    if not bool(filled.all()):
        raise ValueError("loader did not cover every dataset index (drop_last or a sampler?)")
    return maps.cpu().numpy(), total.item() / pixels


@torch.inference_mode()
def compute_location_map(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    num_classes: int,
    stride: int,
    device: torch.device | str,
) -> Tensor:
    """Location LEEP map (H // stride, W // stride) float64 of the whole loader (``location_leep_map`` of
    every batch pooled), in two passes whose memory does not grow with the number of images."""
    device = torch.device(device)
    joint = None
    seen = LabelRange()
    for _, probs, labels, _ in batches(model, loader, num_classes, device, seen):
        part = T.location_joint(probs, labels, num_classes, stride, validate=False)
        joint = part if joint is None else joint + part
    seen.check(num_classes)
    cond = T.location_conditional(joint)
    log_sum = torch.zeros(joint.shape[:2], dtype=torch.float64, device=device)
    count = 0
    for _, probs, labels, _ in batches(model, loader, num_classes, device, LabelRange()):
        log_sum += T.location_log_e_sum(probs, labels, cond, stride, validate=False)
        count += labels.shape[0]
    return log_sum / (count * stride * stride)  # Tan et al., ICIP 2023: LEEP of each window's samples
