"""Pixel-level transferability maths for the Transfer Risk Map (TRM) method.

Segmentation LEEP (pixels as samples), its expected empirical prediction ``e``,
risk maps and pixel weights (DESIGN.md, "Transfer Risk Map", steps 1-6), and
segmentation NCE. Inputs are channel-first: ``probs`` (B, K, *spatial) holds
source-model softmax probabilities over K source classes, ``labels``
(B, *spatial) target classes 0..C-1.

The computation is device-agnostic torch that streams over fixed-size blocks of
pixels, so extra memory does not grow with the input, and never syncs with the
host inside a loop. The eager path builds the one-hot target per block and lets
a batched matmul form the joint; the optional ``torch.compile`` path fuses each
pass into one loop (masked plane sums for the joint, per-pixel selection of
P(y|z) by compares for ``e``). Compilation costs seconds, so it is opt-in: the
``compile`` argument, else the ``NTBENCH_COMPILE`` environment variable
(``1``/``0``/``auto``), else ``auto``, which compiles only CPU inputs of at
least ``COMPILE_MIN_PIXELS`` pixels.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

EPS = 1e-12
PROB_TOL = 1e-3
COMPILE_ENV = "NTBENCH_COMPILE"
# tests/perf, 2 CPU cores: eager ~6.2 ns/pixel, compiled ~2.3 ns/pixel, compile ~5.5 s warm (~22 s cold):
# compiling pays back only beyond ~1.4e9 pixels. On an H200 eager takes ~0.11 ns/pixel and compiled ~0.03
# (tests/perf/device_check.sh), so a compile of seconds never pays back there: auto stays eager off the CPU.
COMPILE_MIN_PIXELS = 1 << 31
RISKS = ("complement", "neglog")
WEIGHTINGS = ("linear", "exp", "none")


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
    x, lab = _flat(probs, labels)
    # running maxima of (-min prob, |sum - 1|, -min label, max label), kept on the device
    stats = torch.full((4,), -math.inf, dtype=torch.float64, device=x.device)
    for bs, ps in _blocks(x.shape[0], x.shape[2], 4 * _block_pixels(x.device)):
        xb, lb = x[bs, :, ps], lab[bs, ps]
        sum_low, sum_high = torch.aminmax(xb.sum(1, dtype=_compute_dtype(xb)))
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


# --- blocking and backend choice --------------------------------------------------------------------------


def _compute_dtype(probs: Tensor) -> torch.dtype:
    """float64 stays float64; float16/bfloat16/float32 are computed in float32 (cast per block)."""
    return torch.float64 if probs.dtype == torch.float64 else torch.float32


def _block_pixels(device: torch.device) -> int:
    """Pixels per eager block. CPU: the block's temporaries (~40 B/pixel) fit a 32 MiB L3, and the
    number of parallel regions (each a barrier that stalls when cores are shared) stays small."""
    return 1 << 19 if device.type == "cpu" else 1 << 24


def _blocks(batch: int, pixels: int, budget: int) -> Iterator[tuple[slice, slice]]:
    """(images, pixels) slices covering a (batch, pixels) grid in order, about ``budget`` pixels each."""
    if pixels >= budget:
        for i in range(batch):
            for start in range(0, pixels, budget):
                yield slice(i, i + 1), slice(start, start + budget)
    else:
        step = budget // pixels
        for start in range(0, batch, step):
            yield slice(start, start + step), slice(0, pixels)


def _flat(probs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(B, K, P) and (B, P) views (a copy only if the input is not channel-first contiguous)."""
    return probs.reshape(probs.shape[0], probs.shape[1], -1), labels.reshape(labels.shape[0], -1)


def _use_compile(compile: bool | None, num_pixels: int, device: torch.device) -> bool:
    if compile is not None:
        return compile
    mode = os.environ.get(COMPILE_ENV, "auto").strip().lower()
    if mode not in ("1", "0", "auto"):
        raise ValueError(f"{COMPILE_ENV} must be 1, 0 or auto, got {mode!r}")
    return mode == "1" or (mode == "auto" and device.type == "cpu" and num_pixels >= COMPILE_MIN_PIXELS)


# --- fused kernels (torch.compile) ------------------------------------------------------------------------


def _joint_fused(x: Tensor, lab: Tensor, num_classes: int) -> Tensor:
    """(C, K) float64 joint of x (B, K, P), lab (B, P) as C*K masked plane sums (one loop once compiled)."""
    x = x.to(_compute_dtype(x))
    lab_f = lab.to(x.dtype)
    sums = [
        torch.where(lab_f == y, x[:, z], 0).sum(dtype=torch.float64)
        for y in range(num_classes)
        for z in range(x.shape[1])
    ]
    return torch.stack(sums).view(num_classes, x.shape[1])


def _e_fused(x: Tensor, lab: Tensor, cond: Tensor) -> Tensor:
    """e (B, P) = sum_z P(y|z) x[:, z], with P(y_pixel|z) selected by compares, not an indexed load."""
    x = x.to(cond.dtype)
    lab_f = lab.to(x.dtype)
    num_classes, num_source = cond.shape
    e = torch.zeros_like(x[:, 0])
    for z in range(num_source):
        sel = cond[num_classes - 1, z]
        for y in range(num_classes - 1):
            sel = torch.where(lab_f == y, cond[y, z], sel)
        e = e + x[:, z] * sel
    return e


def _log_sum_fused(x: Tensor, lab: Tensor, cond: Tensor) -> Tensor:
    """Sum over pixels of log max(e, EPS), accumulated in float64."""
    return torch.log(_e_fused(x, lab, cond).clamp_min(EPS)).sum(dtype=torch.float64)


@functools.cache
def _compiled(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    return torch.compile(fn, dynamic=True)


# --- eager block kernels ----------------------------------------------------------------------------------


def _joint_eager(x: Tensor, lab: Tensor, num_classes: int) -> Tensor:
    """(C, K) float64 joint, per block: one-hot rows 1..C-1 by compares and a batched matmul; row 0
    (background, usually the largest) is the column total minus the other rows."""
    budget, cd = _block_pixels(x.device), _compute_dtype(x)
    cap = min(budget, lab.numel())  # largest block
    classes = torch.arange(1, num_classes, dtype=cd, device=x.device).view(1, num_classes - 1, 1)
    lab_buf = torch.empty(cap, dtype=cd, device=x.device)
    hot_buf = torch.empty(cap * (num_classes - 1), dtype=cd, device=x.device)
    rows = torch.zeros(num_classes - 1, x.shape[1], dtype=torch.float64, device=x.device)
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    for bs, ps in _blocks(x.shape[0], x.shape[2], budget):
        xb, lb = x[bs, :, ps].to(cd), lab[bs, ps]
        n, p = lb.shape
        lab_f = lab_buf[: n * p].view(n, 1, p).copy_(lb.unsqueeze(1))
        hot = torch.eq(lab_f, classes, out=hot_buf[: n * p * (num_classes - 1)].view(n, num_classes - 1, p))
        # per-block partial sums (at most `budget` pixels) in float32 or 64, accumulated in float64
        rows += torch.bmm(hot, xb.transpose(1, 2)).sum(0, dtype=torch.float64)
        total += xb.sum((0, 2)).double()
    return torch.cat([(total - rows.sum(0)).unsqueeze(0), rows])


def _e_blocks(x: Tensor, lab: Tensor, cond: Tensor) -> Iterator[tuple[slice, slice, Tensor]]:
    """Per block: e = P(y|z) @ x gathered at each pixel's label, in cond's dtype (block buffers, reused)."""
    budget = _block_pixels(x.device)
    cap, num_classes = min(budget, lab.numel()), cond.shape[0]  # largest block, target classes
    every_buf = torch.empty(cap * num_classes, dtype=cond.dtype, device=x.device)
    index_buf = torch.empty(cap, dtype=torch.int64, device=x.device)
    e_buf = torch.empty(cap, dtype=cond.dtype, device=x.device)
    for bs, ps in _blocks(x.shape[0], x.shape[2], budget):
        xb, lb = x[bs, :, ps].to(cond.dtype), lab[bs, ps]
        n, p = lb.shape
        every = torch.matmul(cond, xb, out=every_buf[: n * p * num_classes].view(n, num_classes, p))
        # clamped: unchecked labels must not reach gather (a device assert on CUDA)
        index = torch.clamp(lb.long().unsqueeze(1), 0, num_classes - 1, out=index_buf[: n * p].view(n, 1, p))
        e = torch.gather(every, 1, index, out=e_buf[: n * p].view(n, 1, p))
        yield bs, ps, e.view(n, p)


def _joint(x: Tensor, lab: Tensor, num_classes: int, fused: bool) -> Tensor:
    """(C, K) float64 joint of flat x (B, K, P) and lab (B, P)."""
    if fused:
        return _compiled(_joint_fused)(x, lab, num_classes)
    return _joint_eager(x, lab, num_classes)


def _expected(x: Tensor, lab: Tensor, cond: Tensor, fused: bool) -> Tensor:
    """e (B, P) of flat x (B, K, P), lab (B, P) and P(y|z) ``cond`` (C, K) in the compute dtype."""
    if fused:
        return _compiled(_e_fused)(x, lab, cond)
    out = torch.empty(lab.shape, dtype=cond.dtype, device=x.device)
    for bs, ps, e in _e_blocks(x, lab, cond):
        out[bs, ps] = e
    return out


# --- public API -------------------------------------------------------------------------------------------


def leep_joint(
    probs: Tensor, labels: Tensor, num_classes: int, *, validate: bool = True, compile: bool | None = None
) -> Tensor:
    """Unnormalised joint J[y, z] = sum over pixels labelled y of probs[:, z]; (C, K) float64.

    Summing the results of several batches gives the dataset's joint.
    """
    _check(probs, labels, num_classes, validate)
    x, lab = _flat(probs, labels)
    # DESIGN.md, TRM step 2: J[y, z] = sum_pixels theta[z] [y_pixel = y]
    return _joint(x, lab, num_classes, _use_compile(compile, lab.numel(), lab.device))


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
    x, lab = _flat(probs, labels)
    cond = conditional.to(device=x.device, dtype=_compute_dtype(probs))
    # Nguyen et al. 2020, LEEP, ICML, sec. 3, eq. (2): inner sum over source classes z
    return _expected(x, lab, cond, _use_compile(compile, lab.numel(), lab.device)).view(labels.shape)


def segmentation_leep(
    probs: Tensor, labels: Tensor, num_classes: int, *, validate: bool = True, compile: bool | None = None
) -> float:
    """Segmentation LEEP: mean over pixels of log max(e, EPS), two streaming passes over the input."""
    _check(probs, labels, num_classes, validate)
    x, lab = _flat(probs, labels)
    fused = _use_compile(compile, lab.numel(), lab.device)
    cond = leep_conditional(_joint(x, lab, num_classes, fused)).to(_compute_dtype(probs))
    if fused:
        total = _compiled(_log_sum_fused)(x, lab, cond)
    else:
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        for _, _, e in _e_blocks(x, lab, cond):
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
        return 1 - e  # DESIGN.md, TRM step 5: R = 1 - e
    neg = -torch.log(e)  # DESIGN.md, TRM step 5: -log max(e, eps), min-max scaled per image
    flat = neg.reshape(neg.shape[0], -1)
    low, high = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    span = high - low
    return torch.where(span > 0, (flat - low) / span.clamp_min(EPS), 0).view(e.shape)


def pixel_weights(risk: Tensor, weighting: str = "linear", alpha: float = 1.0, beta: float = 2.0) -> Tensor:
    """Pixel loss weights from risk R: ``linear`` 1 + alpha R, ``exp`` beta ** R, or ``none`` (ones)."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if not alpha > -1 or not beta > 0 or not math.isfinite(alpha) or not math.isfinite(beta):
        raise ValueError(f"weights must stay positive and finite: need alpha > -1, beta > 0, got {alpha}, {beta}")
    if weighting == "linear":
        return 1 + alpha * risk  # DESIGN.md, TRM step 6: W = 1 + alpha R
    if weighting == "exp":
        return torch.pow(beta, risk)  # DESIGN.md, TRM step 6: W = beta ** R
    return torch.ones_like(risk)


def nce_counts(
    source_pred: Tensor, labels: Tensor, num_source_classes: int, num_classes: int, *, validate: bool = True
) -> Tensor:
    """(C, K) int64 co-occurrence counts of target label y and hard source prediction z (argmax)."""
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
    pair = labels.reshape(-1).long() * num_source_classes + source_pred.reshape(-1).long()
    counts = torch.zeros(num_classes * num_source_classes, dtype=torch.int64, device=labels.device)
    if not validate:  # keep unchecked values from reaching index_add_ (a device assert on CUDA)
        pair = pair.clamp_(0, counts.numel() - 1)
    counts.index_add_(0, pair, torch.ones((), dtype=torch.int64, device=labels.device).expand_as(pair))
    return counts.view(num_classes, num_source_classes)


def nce_from_counts(counts: Tensor) -> float:
    """NCE = -H(Y|Z) = sum_{y,z} P(y, z) log P(y|z) from (C, K) counts (0 log 0 = 0)."""
    if counts.ndim != 2:
        raise ValueError(f"counts must be a (C, K) matrix, got shape {tuple(counts.shape)}")
    counts = counts.double()
    total = counts.sum()
    if not bool((counts >= 0).all()) or not total > 0:
        raise ValueError("counts must be non-negative with a positive total")
    p_joint = counts / total
    p_cond = p_joint / p_joint.sum(0, keepdim=True).clamp_min(EPS)
    # Tran et al. 2019, ICCV, "Transferability and hardness of supervised classification tasks", sec. 3, NCE
    return torch.where(p_joint > 0, p_joint * torch.log(p_cond.clamp_min(EPS)), 0).sum().item()


def segmentation_nce(source_pred: Tensor, labels: Tensor, num_source_classes: int, num_classes: int) -> float:
    """Segmentation NCE from hard source predictions (argmax), pixels as samples."""
    return nce_from_counts(nce_counts(source_pred, labels, num_source_classes, num_classes))


# --- streaming driver over a source model -----------------------------------------------------------------


class _LabelRange:
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


def _batches(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    num_classes: int,
    device: torch.device,
    seen: _LabelRange,
) -> Iterator[tuple[Mapping[str, Any], Tensor, Tensor]]:
    """(batch, flat probs (B, K, P), flat labels (B, P)) on ``device``; probs = softmax of the logits."""
    for batch in loader:
        logits = model(batch["image"].to(device, non_blocking=True))
        probs = torch.softmax(logits.float(), 1)  # DESIGN.md, TRM step 1: theta = softmax(f_s(x))
        labels = batch["label"].to(device, non_blocking=True)
        _check_shapes(probs, labels, num_classes)
        seen.update(labels)
        yield batch, *_flat(probs, labels)


def _loader_compile(compile: bool | None, loader: Iterable[Any], first: Tensor) -> bool:
    """Backend for a whole pass: ``auto`` weighs the dataset's pixel count, not one batch's."""
    images = len(getattr(loader, "dataset", ()))
    return _use_compile(compile, images * first[0].numel(), first.device)


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
    seen = _LabelRange()
    for _, x, lab in _batches(model, loader, num_classes, device, seen):
        if joint is None:
            fused = _loader_compile(compile, loader, lab)
            joint = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, device=device)
            counts = torch.zeros(num_classes, x.shape[1], dtype=torch.int64, device=device)
        joint += _joint(x, lab, num_classes, fused)
        counts += nce_counts(x.argmax(1), lab, x.shape[1], num_classes, validate=False)
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
) -> tuple[np.ndarray, float]:
    """Pass 2: pixel-weight maps (N, *spatial) float16 in dataset order (``batch["index"]``) and the LEEP.

    Maps live in one preallocated device buffer and are copied to the host once, at the end.
    """
    device = torch.device(device)
    pixel_weights(torch.zeros(1), weighting, alpha, beta)  # fail fast on bad settings
    risk_map(torch.ones(1), risk)
    if conditional.ndim != 2:
        raise ValueError(f"conditional must be a (C, K) matrix, got shape {tuple(conditional.shape)}")
    _check_conditional(conditional, conditional.shape[1])
    num_classes = conditional.shape[0]
    cond = conditional.to(device=device, dtype=torch.float32)
    size = len(loader.dataset)  # type: ignore[attr-defined]
    maps = None
    filled = torch.zeros(size, dtype=torch.bool, device=device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    pixels = 0
    fused = False
    seen = _LabelRange()
    for batch, x, lab in _batches(model, loader, num_classes, device, seen):
        if x.shape[1] != cond.shape[1]:
            raise ValueError(f"model gives {x.shape[1]} source classes, conditional has {cond.shape[1]}")
        if "index" not in batch:
            raise ValueError("batches need an 'index' entry to put maps in dataset order")
        if maps is None:
            fused = _loader_compile(compile, loader, lab)
            maps = torch.empty((size, *batch["label"].shape[1:]), dtype=torch.float16, device=device)
        e = _expected(x, lab, cond, fused).view(batch["label"].shape)
        total += torch.log(e.clamp_min(EPS)).sum(dtype=torch.float64)  # LEEP, eq. (2), pixels as samples
        pixels += e.numel()
        weights = pixel_weights(risk_map(e, risk, validate=False), weighting, alpha, beta)
        index = torch.as_tensor(batch["index"]).to(device, non_blocking=True)
        maps.index_copy_(0, index, weights.to(torch.float16))
        filled[index] = True
    seen.check(num_classes)
    if not bool(filled.all()):
        raise ValueError("loader did not cover every dataset index (drop_last or a sampler?)")
    return maps.cpu().numpy(), total.item() / pixels
