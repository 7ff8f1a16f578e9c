"""Transferability maths for the Transfer Risk Map (TRM) method: the public API.

Segmentation LEEP (pixels as samples), its expected empirical prediction ``e``, the location-level
LEEP map (one LEEP per stride x stride window over all target images, Tan et al., ICIP 2023), risk
maps and pixel weights (README, "Transfer Risk Map"), and segmentation NCE. Inputs are
channel-first: ``probs`` (B, K, *spatial) holds source-model softmax probabilities over K source
classes, ``labels`` (B, *spatial) target classes 0..C-1. The block kernels live in
``methods.leep_kernels``, the streaming passes over a source model in ``methods.leep_driver``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from methods import leep_kernels as K
from methods.leep_kernels import EPS

PROB_TOL = 1e-3
RISKS = ("complement", "neglog")
WEIGHTINGS = ("linear", "exp", "none", "inverse")
# W = 1/e is capped at 1/INVERSE_FLOOR so that a near-zero e cannot dominate a batch or overflow float16
# (a window's e is a geometric mean, exp(LEEP), and stays far above the floor on every suite).
INVERSE_FLOOR = 1e-3


# --- validation ---------------------------------------------------------------------------------------------


def _check_shapes(probs: Tensor, labels: Tensor, num_classes: int) -> None:
    """Shape, dtype and device checks; no data is read."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if probs.ndim < 2 or not probs.dtype.is_floating_point:
        raise ValueError(f"probs must be a float tensor (B, K, *spatial), got {probs.dtype} {tuple(probs.shape)}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    if labels.shape != probs.shape[:1] + probs.shape[2:]:
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match probs {tuple(probs.shape)} less dim 1")
    if probs.device != labels.device:
        raise ValueError(f"probs on {probs.device} but labels on {labels.device}")
    if probs.numel() == 0:
        raise ValueError(f"empty input: probs shape {tuple(probs.shape)}")


def _check_values(probs: Tensor, labels: Tensor, num_classes: int) -> None:
    """One fused value check, block by block, with a single host sync: probabilities and label range."""
    x, lab = K.flat(probs, labels)
    # running maxima of (-min prob, |sum - 1|, -min label, max label), kept on the device
    stats = torch.full((4,), -math.inf, dtype=torch.float64, device=x.device)
    for bs, ps in K.blocks(x.shape[0], x.shape[2], 4 * K.block_pixels(x.device)):
        xb, lb = x[bs, :, ps], lab[bs, ps]
        sum_low, sum_high = torch.aminmax(xb.sum(1, dtype=K.compute_dtype(xb)))
        lab_low, lab_high = torch.aminmax(lb)
        spread = torch.maximum(1 - sum_low, sum_high - 1)
        block = torch.stack([-xb.amin().double(), spread.double(), -lab_low.double(), lab_high.double()])
        stats = torch.maximum(stats, block)
    neg_low, dev, neg_lab_min, lab_max = stats.tolist()
    low, lab_min = -neg_low, -neg_lab_min
    if not low >= 0:  # also catches NaN
        raise ValueError(f"probs must be probabilities: found value {low} < 0 (or NaN)")
    if not dev <= PROB_TOL:
        raise ValueError(f"probs must sum to 1 over the class axis (dim 1): off by up to {dev:.3g}")
    if lab_min < 0 or lab_max >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, found range {lab_min:.0f}..{lab_max:.0f}")


def _check(probs: Tensor, labels: Tensor, num_classes: int, validate: bool) -> None:
    _check_shapes(probs, labels, num_classes)
    if validate:
        _check_values(probs, labels, num_classes)


def _check_conditional(conditional: Tensor, num_source_classes: int) -> None:
    if conditional.ndim != 2 or conditional.shape[1] != num_source_classes:
        raise ValueError(f"conditional must have shape (C, K={num_source_classes}), got {tuple(conditional.shape)}")
    if not bool(((conditional >= 0) & (conditional <= 1)).all()):  # (C, K): negligible
        raise ValueError("conditional must hold probabilities P(y|z) in [0, 1] (no NaN)")


# --- public API -------------------------------------------------------------------------------------------


def leep_joint(
    probs: Tensor, labels: Tensor, num_classes: int, *, validate: bool = True, compile: bool | None = None
) -> Tensor:
    """Unnormalised joint J[y, z] = sum over pixels labelled y of probs[:, z]; (C, K) float64.

    Summing the results of several batches gives the dataset's joint.
    """
    _check(probs, labels, num_classes, validate)
    x, lab = K.flat(probs, labels)
    # docs/design.md §TRM: J[y, z] = sum_pixels theta[z] [y_pixel = y]
    return K.joint(x, lab, num_classes, K.use_compile(compile, lab.numel(), lab.device))


def leep_conditional(joint: Tensor) -> Tensor:
    """P(y|z) = P(y, z) / max(P(z), EPS) from a (C, K) joint; zero-mass columns give zeros."""
    if joint.ndim != 2 or not joint.dtype.is_floating_point:
        raise ValueError(f"joint must be a float (C, K) matrix, got {joint.dtype} {tuple(joint.shape)}")
    joint = joint.double()
    total = joint.sum()
    if not bool((joint >= 0).all()) or not total > 0:
        raise ValueError("joint must be non-negative with positive total mass")
    p_joint = joint / total  # Nguyen et al. 2020, LEEP, ICML, sec. 3: empirical joint P(y, z)
    return p_joint / p_joint.sum(0, keepdim=True).clamp_min(EPS)  # ibid., sec. 3: empirical P(y|z)


def expected_empirical_prediction(
    probs: Tensor,
    labels: Tensor,
    conditional: Tensor,
    *,
    validate: bool = True,
    compile: bool | None = None,
) -> Tensor:
    """e = sum_z P(y_pixel|z) probs[z] per pixel (labels' shape), in (0, 1]."""
    _check_shapes(probs, labels, 1)
    _check_conditional(conditional, probs.shape[1])
    _check(probs, labels, conditional.shape[0], validate)
    x, lab = K.flat(probs, labels)
    cond = conditional.to(device=x.device, dtype=K.compute_dtype(probs))
    # Nguyen et al. 2020, LEEP, ICML, sec. 3, eq. (2): inner sum over source classes z
    return K.expected(x, lab, cond, K.use_compile(compile, lab.numel(), lab.device)).view(labels.shape)


def segmentation_leep(
    probs: Tensor, labels: Tensor, num_classes: int, *, validate: bool = True, compile: bool | None = None
) -> float:
    """Segmentation LEEP: mean over pixels of log max(e, EPS), two streaming passes over the input."""
    _check(probs, labels, num_classes, validate)
    x, lab = K.flat(probs, labels)
    fused = K.use_compile(compile, lab.numel(), lab.device)
    cond = leep_conditional(K.joint(x, lab, num_classes, fused)).to(K.compute_dtype(probs))
    if fused:
        total = K.compiled(K.log_sum_fused)(x, lab, cond)
    else:
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        for _, _, e in K.e_blocks(x, lab, cond):
            total += e.clamp_(min=EPS).log_().sum()  # block sums in float32 or 64, accumulated in float64
    # Nguyen et al. 2020, LEEP, ICML, sec. 3, eq. (2), with pixels as samples
    return total.item() / lab.numel()


def risk_map(e: Tensor, kind: str = "complement", *, validate: bool = True) -> Tensor:
    """Risk R in [0, 1] from e: ``complement`` 1 - e, or ``neglog`` -log e min-max scaled per image."""
    if kind not in RISKS:
        raise ValueError(f"risk kind must be one of {RISKS}, got {kind!r}")
    if e.ndim < 1 or e.numel() == 0 or not e.dtype.is_floating_point:
        raise ValueError(f"e must be a non-empty float tensor (B, *spatial), got {e.dtype} {tuple(e.shape)}")
    if validate and not bool(((e >= 0) & (e <= 1 + PROB_TOL)).all()):
        raise ValueError("e must lie in [0, 1] (no NaN)")
    e = e.clamp(EPS, 1)  # float rounding can put e a hair above 1
    if kind == "complement":
        return 1 - e  # docs/design.md §TRM: R = 1 - e
    neg = -torch.log(e)  # docs/design.md §TRM: -log max(e, eps), min-max scaled per image
    flat = neg.reshape(neg.shape[0], -1)
    low, high = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    span = high - low
    return torch.where(span > 0, (flat - low) / span.clamp_min(EPS), 0).view(e.shape)


def pixel_weights(risk: Tensor, weighting: str = "linear", alpha: float = 1.0, beta: float = 2.0) -> Tensor:
    """Pixel loss weights from risk R: ``linear`` 1 + alpha R, ``exp`` beta ** R, or ``none`` (ones).

    ``inverse`` weights come from e, not R: use ``weights_from_e``.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if not alpha > -1 or not beta > 0 or not math.isfinite(alpha) or not math.isfinite(beta):
        raise ValueError(f"weights must stay positive and finite: need alpha > -1, beta > 0, got {alpha}, {beta}")
    if weighting == "linear":
        return 1 + alpha * risk  # docs/design.md §TRM: W = 1 + alpha R
    if weighting == "exp":
        return torch.pow(beta, risk)  # docs/design.md §TRM: W = beta ** R
    if weighting == "inverse":
        raise ValueError("weighting 'inverse' is W = 1/e: use weights_from_e")
    return torch.ones_like(risk)


def weights_from_e(
    e: Tensor, risk: str = "complement", weighting: str = "linear", alpha: float = 1.0, beta: float = 2.0
) -> Tensor:
    """Loss weights from e (B, *spatial): ``inverse`` 1/max(e, INVERSE_FLOOR), else ``pixel_weights`` of R."""
    if weighting == "inverse":
        risk_map(e, risk)  # the same input checks
        # Tan et al., ICIP 2023, code `is_weight_map`: W = exp(-LEEP) = 1/e (e a window's geometric mean)
        return 1 / e.clamp(INVERSE_FLOOR, 1)
    return pixel_weights(risk_map(e, risk, validate=False), weighting, alpha, beta)


def _check_predictions(
    source_pred: Tensor, labels: Tensor, num_source_classes: int, num_classes: int, validate: bool
) -> None:
    """Shapes, dtypes and (with ``validate``) value ranges of hard source predictions and target labels."""
    if source_pred.shape != labels.shape:
        raise ValueError(f"source_pred shape {tuple(source_pred.shape)} != labels shape {tuple(labels.shape)}")
    if source_pred.device != labels.device:
        raise ValueError(f"source_pred on {source_pred.device} but labels on {labels.device}")
    for name, t, n in (("source_pred", source_pred, num_source_classes), ("labels", labels, num_classes)):
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer tensor, got {t.dtype}")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"class count for {name} must be a positive int, got {n!r}")
    if validate and labels.numel():
        ranges = torch.stack([torch.stack(torch.aminmax(source_pred)), torch.stack(torch.aminmax(labels))])
        (z_low, z_high), (y_low, y_high) = ranges.tolist()
        if z_low < 0 or z_high >= num_source_classes:
            raise ValueError(f"source_pred must lie in 0..{num_source_classes - 1}, found {z_low}..{z_high}")
        if y_low < 0 or y_high >= num_classes:
            raise ValueError(f"labels must lie in 0..{num_classes - 1}, found range {y_low}..{y_high}")


def _count_pairs(pair: Tensor, size: int, validate: bool) -> Tensor:
    """int64 histogram of ``pair`` over 0..size-1."""
    counts = torch.zeros(size, dtype=torch.int64, device=pair.device)
    if not validate:  # keep unchecked values from reaching index_add_ (a device assert on CUDA)
        pair = pair.clamp_(0, size - 1)
    return counts.index_add_(0, pair, torch.ones((), dtype=torch.int64, device=pair.device).expand_as(pair))


def nce_counts(
    source_pred: Tensor, labels: Tensor, num_source_classes: int, num_classes: int, *, validate: bool = True
) -> Tensor:
    """(C, K) int64 co-occurrence counts of target label y and hard source prediction z (argmax)."""
    _check_predictions(source_pred, labels, num_source_classes, num_classes, validate)
    pair = labels.reshape(-1).long() * num_source_classes + source_pred.reshape(-1).long()
    counts = _count_pairs(pair, num_classes * num_source_classes, validate)
    return counts.view(num_classes, num_source_classes)


def _nce(counts: Tensor) -> Tensor:
    """NCE of every (C, K) count matrix in the trailing two dims (float64; 0 log 0 = 0)."""
    counts = counts.double()
    p_joint = counts / counts.sum((-2, -1), keepdim=True)
    p_cond = p_joint / p_joint.sum(-2, keepdim=True).clamp_min(EPS)
    # Tran et al. 2019, ICCV, "Transferability and hardness of supervised classification tasks", sec. 3, NCE
    return torch.where(p_joint > 0, p_joint * torch.log(p_cond.clamp_min(EPS)), 0).sum((-2, -1))


def nce_from_counts(counts: Tensor) -> float:
    """NCE = -H(Y|Z) = sum_{y,z} P(y, z) log P(y|z) from (C, K) counts (0 log 0 = 0)."""
    if counts.ndim != 2:
        raise ValueError(f"counts must be a (C, K) matrix, got shape {tuple(counts.shape)}")
    if not bool((counts >= 0).all()) or not counts.double().sum() > 0:
        raise ValueError("counts must be non-negative with a positive total")
    return _nce(counts).item()


def segmentation_nce(source_pred: Tensor, labels: Tensor, num_source_classes: int, num_classes: int) -> float:
    """Segmentation NCE from hard source predictions (argmax), pixels as samples."""
    return nce_from_counts(nce_counts(source_pred, labels, num_source_classes, num_classes))


def _check_stride(stride: int, spatial: tuple[int, ...]) -> None:
    if len(spatial) != 2:
        raise ValueError(f"location maps need 2D images (B, K, H, W), got spatial shape {spatial}")
    if not isinstance(stride, int) or isinstance(stride, bool) or not 1 <= stride <= min(spatial):
        size = f"{spatial[0]}x{spatial[1]}"
        raise ValueError(f"stride must be an int in 1..{min(spatial)} (the image is {size}), got {stride!r}")


def location_joint(probs: Tensor, labels: Tensor, num_classes: int, stride: int, *, validate: bool = True) -> Tensor:
    """Unnormalised joint of every window, (H // stride, W // stride, C, K) float64; sums over batches."""
    _check(probs, labels, num_classes, validate)
    _check_stride(stride, tuple(labels.shape[1:]))
    h, w = labels.shape[1] // stride, labels.shape[2] // stride
    return K.window_joint(probs, labels, num_classes, stride).view(h, w, num_classes, probs.shape[1])


def location_log_e_sum(
    probs: Tensor, labels: Tensor, conditional: Tensor, stride: int, *, validate: bool = True
) -> Tensor:
    """Sum of log max(e, EPS) over each window's pixels, (H // stride, W // stride) float64; sums over batches.

    ``conditional`` (H // stride, W // stride, C, K) holds each window's own P(y|z).
    """
    _check_shapes(probs, labels, 1)
    _check_stride(stride, tuple(labels.shape[1:]))
    h, w = labels.shape[1] // stride, labels.shape[2] // stride
    if conditional.shape[:2] != (h, w) or conditional.ndim != 4 or conditional.shape[3] != probs.shape[1]:
        want = f"({h}, {w}, C, K={probs.shape[1]})"
        raise ValueError(f"conditional must have shape {want}, got {tuple(conditional.shape)}")
    _check(probs, labels, conditional.shape[2], validate)
    cond = conditional.to(device=probs.device, dtype=K.compute_dtype(probs)).reshape(h * w, *conditional.shape[2:])
    return K.window_log_sum(probs, labels, cond, stride).view(h, w)


def location_conditional(joint: Tensor) -> Tensor:
    """Each window's P(y|z) from its joint (h, w, C, K); zero-mass source classes give zeros."""
    if joint.ndim != 4 or not joint.dtype.is_floating_point:
        raise ValueError(f"joint must be a float (h, w, C, K) tensor, got {joint.dtype} {tuple(joint.shape)}")
    if not bool((joint >= 0).all()):
        raise ValueError("joint must be non-negative")
    # Tan et al., ICIP 2023 (LEEP per window, their code `LEEP`): P(y|z) = P(y, z) / P(z), 0 where P(z) = 0
    return joint.double() / joint.double().sum(2, keepdim=True).clamp_min(EPS)


def location_leep_map(probs: Tensor, labels: Tensor, num_classes: int, stride: int, *, validate: bool = True) -> Tensor:
    """Per-window LEEP (H // stride, W // stride) float64 (Tan et al., ICIP 2023, pixel-wise transferability).

    Each window pools its pixels of *all* images as samples and estimates its own joint P(y, z) and
    P(y|z) from them; windows cover the first (H // stride)*stride rows and columns. Two passes that
    stream over blocks of images, so extra memory does not grow with the number of images.
    """
    joint = location_joint(probs, labels, num_classes, stride, validate=validate)
    log_sum = location_log_e_sum(probs, labels, location_conditional(joint), stride, validate=False)
    return log_sum / (labels.shape[0] * stride * stride)  # LEEP, eq. (2), over the window's samples


def location_counts(
    source_pred: Tensor,
    labels: Tensor,
    num_source_classes: int,
    num_classes: int,
    stride: int,
    *,
    validate: bool = True,
) -> Tensor:
    """(H // stride, W // stride, C, K) int64 counts of (target label, hard source prediction) over each
    window's pixels of all images (``nce_counts`` per window); sums over batches."""
    _check_predictions(source_pred, labels, num_source_classes, num_classes, validate)
    _check_stride(stride, tuple(labels.shape[1:]))
    h, w = labels.shape[1] // stride, labels.shape[2] // stride
    rows = torch.arange(h * stride, device=labels.device) // stride
    cols = torch.arange(w * stride, device=labels.device) // stride
    window = (rows[:, None] * w + cols[None, :]).expand(labels.shape[0], -1, -1)  # (n, h*s, w*s) window id
    y = labels[:, : h * stride, : w * stride].long()
    z = source_pred[:, : h * stride, : w * stride].long()
    pair = ((window * num_classes + y) * num_source_classes + z).reshape(-1)
    counts = _count_pairs(pair, h * w * num_classes * num_source_classes, validate)
    return counts.view(h, w, num_classes, num_source_classes)


def location_nce_map(counts: Tensor) -> Tensor:
    """Per-window NCE (h, w) float64 from ``location_counts`` (Tran et al. 2019 on each window's samples,
    windows as Tan et al., ICIP 2023): NCE_w = mean over the window's pixels of log P_w(y|z)."""
    if counts.ndim != 4:
        raise ValueError(f"counts must be an (h, w, C, K) tensor, got shape {tuple(counts.shape)}")
    if not bool((counts >= 0).all()) or not bool((counts.sum((-2, -1)) > 0).all()):
        raise ValueError("counts must be non-negative with a positive total in every window")
    return _nce(counts)


def window_mean(values: Tensor, stride: int) -> Tensor:
    """(H // stride, W // stride) float64 mean of per-pixel ``values`` (N, H, W) over each window's pixels of all
    images (windows as ``location_leep_map``)."""
    if values.ndim != 3 or not values.dtype.is_floating_point:
        raise ValueError(f"values must be a float (N, H, W) tensor, got {values.dtype} {tuple(values.shape)}")
    _check_stride(stride, tuple(values.shape[1:]))
    h, w = values.shape[1] // stride, values.shape[2] // stride
    windows = values[:, : h * stride, : w * stride].double().reshape(values.shape[0], h, stride, w, stride)
    return windows.mean((0, 2, 4))


def expand_windows(window_map: Tensor, shape: tuple[int, int], stride: int) -> Tensor:
    """A (h, w) window map at full resolution ``shape``: each window's value on its stride x stride pixels,
    remainder rows and columns take the nearest window's value."""
    height, width = shape
    h, w = window_map.shape
    if (h, w) != (height // stride, width // stride):
        raise ValueError(f"window map {tuple(window_map.shape)} does not tile {shape} with stride {stride}")
    full = window_map.repeat_interleave(stride, 0).repeat_interleave(stride, 1)
    pad = (0, width - w * stride, 0, height - h * stride)
    return F.pad(full[None, None], pad, mode="replicate")[0, 0] if any(pad) else full


def location_weights(
    leep_map: Tensor,
    shape: tuple[int, int],
    stride: int,
    risk: str = "complement",
    weighting: str = "inverse",
    alpha: float = 1.0,
    beta: float = 2.0,
) -> Tensor:
    """Full-resolution (H, W) weight map from a location LEEP map: ``weights_from_e`` of each window's
    e = exp(LEEP) (its geometric-mean expected empirical prediction), so ``inverse`` is exp(-LEEP)."""
    e = torch.exp(leep_map.double()).clamp(max=1)[None]  # (1, h, w): one image for the per-image scaling
    return expand_windows(weights_from_e(e, risk, weighting, alpha, beta)[0], shape, stride)
