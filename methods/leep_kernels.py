"""Block kernels of the LEEP maths (internal to ``methods.transferability`` and its driver).

Device-agnostic torch that streams over fixed-size blocks of pixels, so extra memory does not grow
with the input, and never syncs with the host inside a loop. The eager path builds the one-hot
target per block and lets a batched matmul form the joint; the optional ``torch.compile`` path
fuses each pass into one loop (masked plane sums for the joint, per-pixel selection of P(y|z) by
compares for ``e``). Compilation costs seconds, so it is opt-in: the ``compile`` argument, else the
``NTBENCH_COMPILE`` environment variable (``1``/``0``/``auto``), else ``auto``, which compiles only
CPU inputs of at least ``COMPILE_MIN_PIXELS`` pixels. The location kernels (per-window joint and
log-e sums, Tan et al., ICIP 2023) are eager only.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

EPS = 1e-12
COMPILE_ENV = "NTBENCH_COMPILE"
# tests/perf, 2 CPU cores: eager ~6.2 ns/pixel, compiled ~2.3 ns/pixel, compile ~5.5 s warm (~22 s cold):
# compiling pays back only beyond ~1.4e9 pixels. On an H200 eager takes ~0.11 ns/pixel and compiled ~0.03
# (tests/perf/device_check.sh), so a compile of seconds never pays back there: auto stays eager off the CPU.
COMPILE_MIN_PIXELS = 1 << 31


# --- blocking and backend choice --------------------------------------------------------------------------


def compute_dtype(probs: Tensor) -> torch.dtype:
    """float64 stays float64; float16/bfloat16/float32 are computed in float32 (cast per block)."""
    return torch.float64 if probs.dtype == torch.float64 else torch.float32


def block_pixels(device: torch.device) -> int:
    """Pixels per eager block. CPU: the block's temporaries (~40 B/pixel) fit a 32 MiB L3, and the
    number of parallel regions (each a barrier that stalls when cores are shared) stays small."""
    return 1 << 19 if device.type == "cpu" else 1 << 24


def blocks(batch: int, pixels: int, budget: int) -> Iterator[tuple[slice, slice]]:
    """(images, pixels) slices covering a (batch, pixels) grid in order, about ``budget`` pixels each."""
    if pixels >= budget:
        for i in range(batch):
            for start in range(0, pixels, budget):
                yield slice(i, i + 1), slice(start, start + budget)
    else:
        step = budget // pixels
        for start in range(0, batch, step):
            yield slice(start, start + step), slice(0, pixels)


def hard(probs: Tensor) -> Tensor:
    """Hard predictions: the argmax over dim 1 (the first of ties) as ``max(1).indices``, on CPU ~10x faster than
    ``argmax(1)`` over a middle dim (torch 2.14, a (32, 2, 4096) batch: 1.5 vs 14 ms, most of NCE's cost)."""
    return probs.max(1).indices


def flat(probs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(B, K, P) and (B, P) views (a copy only if the input is not channel-first contiguous)."""
    return probs.reshape(probs.shape[0], probs.shape[1], -1), labels.reshape(labels.shape[0], -1)


def use_compile(compile: bool | None, num_pixels: int, device: torch.device) -> bool:
    if compile is not None:
        return compile
    mode = os.environ.get(COMPILE_ENV, "auto").strip().lower()
    if mode not in ("1", "0", "auto"):
        raise ValueError(f"{COMPILE_ENV} must be 1, 0 or auto, got {mode!r}")
    return mode == "1" or (mode == "auto" and device.type == "cpu" and num_pixels >= COMPILE_MIN_PIXELS)


# --- fused kernels (torch.compile) ------------------------------------------------------------------------


def joint_fused(x: Tensor, lab: Tensor, num_classes: int) -> Tensor:
    """(C, K) float64 joint of x (B, K, P), lab (B, P) as C*K masked plane sums (one loop once compiled)."""
    x = x.to(compute_dtype(x))
    lab_f = lab.to(x.dtype)
    sums = [
        torch.where(lab_f == y, x[:, z], 0).sum(dtype=torch.float64)
        for y in range(num_classes)
        for z in range(x.shape[1])
    ]
    return torch.stack(sums).view(num_classes, x.shape[1])


def e_fused(x: Tensor, lab: Tensor, cond: Tensor) -> Tensor:
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


def log_sum_fused(x: Tensor, lab: Tensor, cond: Tensor) -> Tensor:
    """Sum over pixels of log max(e, EPS), accumulated in float64."""
    return torch.log(e_fused(x, lab, cond).clamp_min(EPS)).sum(dtype=torch.float64)


@functools.cache
def compiled(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    return torch.compile(fn, dynamic=True)


# --- eager block kernels ----------------------------------------------------------------------------------


def joint_eager(x: Tensor, lab: Tensor, num_classes: int) -> Tensor:
    """(C, K) float64 joint, per block: one-hot rows of every class by compares and a batched matmul.

    Every row is a sum of its own pixels, never a difference of totals, so a rare or absent class
    (background included) gets an exact, non-negative row in float32 as in float64.
    """
    budget, cd = block_pixels(x.device), compute_dtype(x)
    cap = min(budget, lab.numel())  # largest block
    classes = torch.arange(num_classes, dtype=cd, device=x.device).view(1, num_classes, 1)
    lab_buf = torch.empty(cap, dtype=cd, device=x.device)
    hot_buf = torch.empty(cap * num_classes, dtype=cd, device=x.device)
    rows = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, device=x.device)
    for bs, ps in blocks(x.shape[0], x.shape[2], budget):
        xb, lb = x[bs, :, ps].to(cd), lab[bs, ps]
        n, p = lb.shape
        lab_f = lab_buf[: n * p].view(n, 1, p).copy_(lb.unsqueeze(1))
        hot = torch.eq(lab_f, classes, out=hot_buf[: n * p * num_classes].view(n, num_classes, p))
        # per-block partial sums (at most `budget` pixels) in float32 or 64, accumulated in float64
        rows += torch.bmm(hot, xb.transpose(1, 2)).sum(0, dtype=torch.float64)
    return rows


def e_blocks(x: Tensor, lab: Tensor, cond: Tensor) -> Iterator[tuple[slice, slice, Tensor]]:
    """Per block: e = P(y|z) @ x gathered at each pixel's label, in cond's dtype (block buffers, reused)."""
    budget = block_pixels(x.device)
    cap, num_classes = min(budget, lab.numel()), cond.shape[0]  # largest block, target classes
    every_buf = torch.empty(cap * num_classes, dtype=cond.dtype, device=x.device)
    index_buf = torch.empty(cap, dtype=torch.int64, device=x.device)
    e_buf = torch.empty(cap, dtype=cond.dtype, device=x.device)
    for bs, ps in blocks(x.shape[0], x.shape[2], budget):
        xb, lb = x[bs, :, ps].to(cond.dtype), lab[bs, ps]
        n, p = lb.shape
        every = torch.matmul(cond, xb, out=every_buf[: n * p * num_classes].view(n, num_classes, p))
        # clamped: unchecked labels must not reach gather (a device assert on CUDA)
        index = torch.clamp(lb.long().unsqueeze(1), 0, num_classes - 1, out=index_buf[: n * p].view(n, 1, p))
        e = torch.gather(every, 1, index, out=e_buf[: n * p].view(n, 1, p))
        yield bs, ps, e.view(n, p)


def joint(x: Tensor, lab: Tensor, num_classes: int, fused: bool) -> Tensor:
    """(C, K) float64 joint of flat x (B, K, P) and lab (B, P)."""
    if fused:
        return compiled(joint_fused)(x, lab, num_classes)
    return joint_eager(x, lab, num_classes)


def expected(x: Tensor, lab: Tensor, cond: Tensor, fused: bool) -> Tensor:
    """e (B, P) of flat x (B, K, P), lab (B, P) and P(y|z) ``cond`` (C, K) in the compute dtype."""
    if fused:
        return compiled(e_fused)(x, lab, cond)
    out = torch.empty(lab.shape, dtype=cond.dtype, device=x.device)
    for bs, ps, e in e_blocks(x, lab, cond):
        out[bs, ps] = e
    return out


# --- location kernels: one joint and one LEEP per stride x stride window ----------------------------------


def windows(x: Tensor, lab: Tensor, stride: int) -> tuple[Tensor, Tensor]:
    """(h*w, K, n*s*s) and (h*w, n*s*s) window-major copies of x (n, K, H, W), lab (n, H, W), cropped to
    the first (H // s)*s rows and (W // s)*s columns: each window's pixels of every image side by side."""
    n, k, height, width = x.shape
    h, w = height // stride, width // stride
    xw = x[..., : h * stride, : w * stride].reshape(n, k, h, stride, w, stride)
    lw = lab[..., : h * stride, : w * stride].reshape(n, h, stride, w, stride)
    return (
        xw.permute(2, 4, 1, 0, 3, 5).reshape(h * w, k, n * stride * stride),
        lw.permute(1, 3, 0, 2, 4).reshape(h * w, n * stride * stride),
    )


def image_chunks(x: Tensor) -> Iterator[slice]:
    """Slices of whole images of about one block's pixels each (at least one image)."""
    per_image = x.shape[1] * x.shape[2] * x.shape[3]
    step = max(1, block_pixels(x.device) * 4 // max(per_image, 1))
    for start in range(0, x.shape[0], step):
        yield slice(start, start + step)


def window_joint(x: Tensor, lab: Tensor, num_classes: int, stride: int) -> Tensor:
    """(h*w, C, K) float64 joint per window of x (n, K, H, W), lab (n, H, W), streamed over images."""
    h, w, cd = x.shape[2] // stride, x.shape[3] // stride, compute_dtype(x)
    out = torch.zeros(h * w, num_classes, x.shape[1], dtype=torch.float64, device=x.device)
    classes = torch.arange(num_classes, device=x.device).view(1, num_classes, 1)
    for chunk in image_chunks(x):
        xw, lw = windows(x[chunk].to(cd), lab[chunk], stride)
        hot = (lw.unsqueeze(1) == classes).to(cd)  # (h*w, C, n*s*s)
        out += torch.bmm(hot, xw.transpose(1, 2))  # Tan et al., ICIP 2023: P(y, z) from the window's pixels
    return out


def window_log_sum(x: Tensor, lab: Tensor, cond: Tensor, stride: int) -> Tensor:
    """(h*w,) float64 sum over each window's pixels of log max(e, EPS), e from the window's P(y|z) ``cond``
    (h*w, C, K) in the compute dtype."""
    out = torch.zeros(cond.shape[0], dtype=torch.float64, device=x.device)
    for chunk in image_chunks(x):
        xw, lw = windows(x[chunk].to(cond.dtype), lab[chunk], stride)
        every = torch.bmm(cond, xw)  # (h*w, C, n*s*s): sum_z P(y|z) x_z for every y
        index = lw.long().clamp(0, cond.shape[1] - 1).unsqueeze(1)  # clamped: no device assert on CUDA
        e = torch.gather(every, 1, index).squeeze(1)
        out += e.clamp_min(EPS).log().sum(1, dtype=torch.float64)  # Nguyen et al. 2020, LEEP, eq. (2)
    return out
