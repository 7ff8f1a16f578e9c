"""One TRM training step against one plain fine-tuning step (same backbone, batch, run).

The TRM maps are precomputed and travel with the batch, so a step should cost only a weighted
cross-entropy more (issue target: at most 1.10x). The two steps are timed in interleaved rounds
so that machine noise hits both alike; the ratio of medians is reported in ``extra_info`` and
printed, never asserted.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import pytest
import torch

from benchmarks.backbones import build_backbone
from methods import METHODS
from methods.trm import WEIGHT_KEY

NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DEVICES = ["cpu", pytest.param("cuda", marks=NEEDS_CUDA)]


def _step_fn(method_name: str, device: str) -> Callable[[], None]:
    torch.manual_seed(0)
    model = build_backbone("unet", 1, 2).to(device).train()
    method = METHODS.get(method_name)()
    opt = torch.optim.Adam(method.param_groups(model, 1e-3))
    batch = {
        "image": torch.randn(8, 1, 64, 64, device=device),
        "label": torch.randint(0, 2, (8, 64, 64), device=device),
        WEIGHT_KEY: 1 + torch.rand(8, 64, 64, device=device),
    }

    def step() -> None:
        loss = method.loss(batch, model(batch["image"]), model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()  # time the work, not its launch

    return step


@pytest.mark.parametrize("device", DEVICES)
def test_trm_step_over_finetune_step(benchmark, device: str) -> None:
    steps = {name: _step_fn(name, device) for name in ("finetune", "trm")}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(3):  # warm-up
        for step in steps.values():
            step()
    for _ in range(25):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    benchmark.pedantic(steps["trm"], rounds=5, iterations=1)
    ft, trm = (statistics.median(times[n]) for n in ("finetune", "trm"))
    benchmark.extra_info.update(finetune_ms=ft * 1e3, trm_ms=trm * 1e3, trm_over_finetune=trm / ft)
    print(
        f"\n[{device}] TRM step {trm * 1e3:.1f} ms / fine-tuning step {ft * 1e3:.1f} ms = {trm / ft:.3f}x "
        "(target <= 1.10x)"
    )
