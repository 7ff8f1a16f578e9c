"""Where a CPU training step's time goes, former vs device-resident pipeline, at 64 and 192 px.

Run: python -m pytest tests/perf/test_pipeline_perf.py --benchmark-only -q -s   (one thread, as the
cells on a shared machine). Per size: the step alone (forward, backward, optimiser; batch ready), one
batch loaded and augmented by DataLoader(SliceDataset) (host pipeline) and by DeviceBatches (slices
resident on the device, batched augmentation), each with TRM's float16 map. Reported as ratios measured
in the same run (loading share of a step; host / device loading), never asserted. Issue 16's target:
loading + augmentation <= 10% of a 192 px step.
"""

from __future__ import annotations

import pytest
import torch
from step_and_loading import step_fn, time_device_loading, time_loading, time_steps

from benchmarks.config import Budget
from benchmarks.suite import load_suite

BUDGETS = {"64": Budget(), "192": load_suite("iseg2019-paper").budget}  # batch 8 (default); batch 16 (paper)


@pytest.fixture(autouse=True)
def one_thread() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("size", list(BUDGETS))
def test_step_split_host_vs_device_pipeline(benchmark, size: str) -> None:
    budget = BUDGETS[size]
    step = time_steps({"trm": step_fn("trm", budget, "cpu")}, rounds=3 if size == "192" else 15, warmup=1)["trm"]
    host = min(time_loading(budget, with_map=True) for _ in range(2))
    device = min(time_device_loading(budget, with_map=True) for _ in range(2))
    benchmark.pedantic(step_fn("finetune", budget, "cpu"), rounds=1, iterations=1)
    info = {
        "step_ms": step * 1e3,
        "host_loading_ms": host * 1e3,
        "device_loading_ms": device * 1e3,
        "host_share": host / (host + step),
        "device_share": device / (device + step),
        "host_over_device_loading": host / device,
    }
    benchmark.extra_info.update(info)
    print(
        f"\n[cpu, {size} px, batch {budget.batch_size}, TRM map] step {step * 1e3:.1f} ms; loading + augmentation "
        f"host {host * 1e3:.2f} ms ({info['host_share']:.1%} of step + loading), device-resident "
        f"{device * 1e3:.2f} ms ({info['device_share']:.1%}); host / device = {info['host_over_device_loading']:.1f}x "
        "(target: <= 10% at 192 px)"
    )
