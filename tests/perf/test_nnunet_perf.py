"""The ``nnunet`` backbone against ``unet``: parameters and one fine-tuning step, at the default and paper slice sizes.

Both steps use the same method (finetune), optimiser, batch and device and are timed in interleaved
rounds (``step_and_loading.time_steps``); the ratio of medians is reported in ``extra_info`` and printed,
never asserted. Batches: the default suite's 8 at 64; at the paper sizes (192 iSeg, 240 FeTS) the paper
suites' 16 on CUDA and 2 on CPU (a 240 nnU-Net step on batch 16 takes seconds on a CPU).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
import torch
from step_and_loading import step_fn, time_steps  # pytest puts this folder on sys.path (prepend import mode)

from benchmarks.backbones import build_backbone
from benchmarks.config import Budget

pytest.importorskip("nnunetv2", reason="needs the nnunet extra")
NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DEVICES = ["cpu", pytest.param("cuda", marks=NEEDS_CUDA)]


def backbone_step(backbone: str, budget: Budget, device: str) -> tuple[Callable[[], None], int]:
    """One finetune step of ``backbone`` at the budget's size and batch, and the model's parameter count."""
    params = sum(p.numel() for p in build_backbone(backbone, 1, 2, size=budget.size).parameters())
    return step_fn("finetune", budget, device, backbone), params


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [64, 192, 240])
def test_nnunet_step_over_unet_step(benchmark, device: str, size: int) -> None:
    batch = 8 if size == 64 else (16 if device == "cuda" else 2)
    budget = replace(Budget(), size=size, batch_size=batch)
    built = {name: backbone_step(name, budget, device) for name in ("unet", "nnunet")}
    rounds = 25 if size == 64 or device == "cuda" else 5
    medians = time_steps({name: step for name, (step, _) in built.items()}, rounds=rounds, warmup=2)
    benchmark.pedantic(built["nnunet"][0], rounds=3, iterations=1)
    (u, n), (pu, pn) = (medians["unet"], medians["nnunet"]), (built["unet"][1], built["nnunet"][1])
    benchmark.extra_info.update(
        unet_ms=u * 1e3, nnunet_ms=n * 1e3, step_ratio=n / u, unet_params=pu, nnunet_params=pn, param_ratio=pn / pu
    )
    print(
        f"\n[{device} {size}x{size} batch {batch}] nnunet {pn / 1e6:.2f} M params / unet {pu / 1e6:.2f} M = "
        f"{pn / pu:.1f}x; step {n * 1e3:.1f} ms / {u * 1e3:.1f} ms = {n / u:.2f}x"
    )
