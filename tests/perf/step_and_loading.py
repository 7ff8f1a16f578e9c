"""Split a training step's cost: the step alone (batch already on the device) vs loading a batch.

Run from the repository root: ``PYTHONPATH=. python tests/perf/step_and_loading.py [--device cuda] [--reps 30]``.
Prints the median time of one finetune and one TRM step (MONAI UNet) with the paper suites' budgets (slice
size, batch, optimiser), and of loading + augmenting a batch of 16 slices in the training process on one CPU
thread (the former DataLoader pipeline) and with the device-resident pipeline (DeviceBatches) on the device,
with and without TRM's weight map attached. tests/perf/device_cost.sh calls it after timing whole
cells.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from benchmarks.backbones import build_backbone
from benchmarks.config import Budget
from benchmarks.suite import load_suite
from benchmarks.train import make_optimizer
from datasets.device_batches import DeviceBatches
from datasets.slices import SliceDataset, SliceSet
from methods import METHODS
from methods.trm import WEIGHT_KEY

SUITES = ("fets2021-paper", "iseg2019-paper")  # their budgets: slice size, batch, optimiser


def step_fn(method_name: str, budget: Budget, device: str, backbone: str = "unet") -> Callable[[], None]:
    """One training step of ``method_name`` (a backbone, the budget's optimiser) on a fixed random batch."""
    torch.manual_seed(0)
    model = build_backbone(backbone, 1, 2, size=budget.size).to(device).train()
    method = METHODS.get(method_name)()
    opt = make_optimizer(method.param_groups(model, budget.lr), budget)
    shape = (budget.batch_size, budget.size, budget.size)
    batch = {
        "image": torch.randn(shape[0], 1, *shape[1:], device=device),
        "label": torch.randint(0, 2, shape, device=device),
        WEIGHT_KEY: 1 + torch.rand(shape, device=device),
    }

    def step() -> None:
        loss = method.loss(batch, model(batch["image"]), model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()  # time the work, not its launch

    return step


def time_steps(steps: dict[str, Callable[[], None]], rounds: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each step, timed in interleaved rounds (load changes hit all alike)."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(warmup):
        for step in steps.values():
            step()
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(spent) for name, spent in times.items()}


def random_dataset(budget: Budget, with_map: bool, slices: int = 256) -> SliceDataset:
    """An augmented SliceDataset of random slices at the budget's size, with TRM's float16 map if asked."""
    rng, size = np.random.default_rng(0), budget.size
    data = SliceSet.of_volume(
        rng.normal(size=(slices, 1, size, size)).astype(np.float32),
        rng.integers(0, 2, (slices, size, size)).astype(np.uint8),
    )
    dataset = SliceDataset(data, augment=True, seed=0)
    if with_map:
        dataset.attach(WEIGHT_KEY, (1 + rng.random((slices, size, size))).astype(np.float16))
    return dataset


def time_loading(budget: Budget, with_map: bool, slices: int = 256) -> float:
    """Seconds per batch to load and augment slices on the host (DataLoader(SliceDataset), num_workers=0)."""
    dataset = random_dataset(budget, with_map, slices)
    loader = DataLoader(dataset, batch_size=budget.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    batches = iter(loader)
    next(batches)
    start, count = time.perf_counter(), 0
    for _ in batches:
        count += 1
    return (time.perf_counter() - start) / count


def time_device_loading(
    budget: Budget, with_map: bool, device: str = "cpu", slices: int = 256, epochs: int = 2
) -> float:
    """Seconds per batch of DeviceBatches (slices resident on ``device``, augmented there), synchronised."""
    batches = DeviceBatches(
        random_dataset(budget, with_map, slices),
        budget.batch_size,
        torch.device(device),
        torch.Generator().manual_seed(0),
    )
    for _ in batches.epoch():  # warm-up: first touch, kernel caches
        pass
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    start, count = time.perf_counter(), 0
    for _ in range(epochs):
        for _ in batches.epoch():
            count += 1
        sync()
    return (time.perf_counter() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()
    budgets = {suite: load_suite(suite).budget for suite in SUITES}
    for suite, budget in budgets.items():
        steps = {name: step_fn(name, budget, args.device) for name in ("finetune", "trm")}
        medians = time_steps(steps, args.reps, warmup=min(5, args.reps))
        print(
            f"step alone, {suite} ({budget.size}x{budget.size}, batch {budget.batch_size}) on {args.device}: "
            + ", ".join(f"{name} {seconds * 1e3:.1f} ms" for name, seconds in medians.items())
        )
    torch.set_num_threads(1)
    for suite, budget in budgets.items():
        plain, with_map = time_loading(budget, False), time_loading(budget, True)
        print(
            f"load + augment, {suite} ({budget.size}x{budget.size}, batch {budget.batch_size}), 1 CPU thread: "
            f"{plain * 1e3:.1f} ms "
            f"({with_map * 1e3:.1f} ms with TRM's map)"
        )
        device, device_map = (time_device_loading(budget, m, args.device) for m in (False, True))
        print(
            f"device-resident batches (DeviceBatches), {suite} on {args.device}: {device * 1e3:.2f} ms "
            f"({device_map * 1e3:.2f} ms with TRM's map)"
        )


if __name__ == "__main__":
    main()
