"""One TRM training step against one plain fine-tuning step (same backbone, batch, run).

The TRM maps are precomputed and travel with the batch, so a step should cost only a weighted
cross-entropy more (issue target: at most 1.10x). The two steps are timed in interleaved rounds
so that machine noise hits both alike; the ratio of medians is reported in ``extra_info`` and
printed, never asserted.
"""

from __future__ import annotations

import pytest
import torch
from step_and_loading import step_fn, time_steps  # pytest puts this folder on sys.path (prepend import mode)

from benchmarks.config import Budget

NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DEVICES = ["cpu", pytest.param("cuda", marks=NEEDS_CUDA)]


@pytest.mark.parametrize("device", DEVICES)
def test_trm_step_over_finetune_step(benchmark, device: str) -> None:
    budget = Budget()  # MONAI UNet, Adam 1e-3, batch 8 of 64x64
    steps = {name: step_fn(name, budget, device) for name in ("finetune", "trm")}
    medians = time_steps(steps, rounds=25, warmup=3)
    benchmark.pedantic(steps["trm"], rounds=5, iterations=1)
    ft, trm = medians["finetune"], medians["trm"]
    benchmark.extra_info.update(finetune_ms=ft * 1e3, trm_ms=trm * 1e3, trm_over_finetune=trm / ft)
    print(
        f"\n[{device}] TRM step {trm * 1e3:.1f} ms / fine-tuning step {ft * 1e3:.1f} ms = {trm / ft:.3f}x "
        "(target <= 1.10x)"
    )
