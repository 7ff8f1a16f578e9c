"""Split a training step's cost: the step alone (batch already on the device) vs loading a batch.

Run from the repository root: ``PYTHONPATH=. python tests/perf/step_and_loading.py [--device cuda] [--reps 30]``.
Prints the median time of one finetune and one TRM step (MONAI UNet, SGD, batch 16) at the paper suites'
slice sizes, and of loading + augmenting a batch of 16 slices in the training process on one CPU thread,
with and without TRM's weight map attached. tests/perf/device_cost.sh calls it after timing whole cells.
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
from datasets.slices import SliceDataset, SliceSet
from methods import METHODS
from methods.trm import WEIGHT_KEY

SIZES = (240, 192)  # fets2021-paper, iseg2019-paper
BATCH = 16


def step_fn(method_name: str, size: int, device: str) -> Callable[[], None]:
    torch.manual_seed(0)
    model = build_backbone("unet", 1, 2).to(device).train()
    method = METHODS.get(method_name)()
    opt = torch.optim.SGD(method.param_groups(model, 1e-2), lr=1e-2, momentum=0.99, nesterov=True)
    batch = {
        "image": torch.randn(BATCH, 1, size, size, device=device),
        "label": torch.randint(0, 2, (BATCH, size, size), device=device),
        WEIGHT_KEY: 1 + torch.rand(BATCH, size, size, device=device),
    }

    def step() -> None:
        loss = method.loss(batch, model(batch["image"]), model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    return step


def time_steps(size: int, device: str, reps: int) -> dict[str, float]:
    """Median seconds per step of finetune and trm, timed in interleaved rounds after a warm-up."""
    steps = {name: step_fn(name, size, device) for name in ("finetune", "trm")}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(min(5, reps)):
        for step in steps.values():
            step()
    for _ in range(reps):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(spent) for name, spent in times.items()}


def time_loading(size: int, with_map: bool, slices: int = 256) -> float:
    """Seconds per batch to load and augment slices (the training loop's DataLoader, num_workers=0)."""
    rng = np.random.default_rng(0)
    data = SliceSet(
        rng.normal(size=(slices, 1, size, size)).astype(np.float32),
        rng.integers(0, 2, (slices, size, size)).astype(np.uint8),
        np.zeros(slices, np.int32),
        np.arange(slices, dtype=np.int32),
        ["s"],
        {"s": (size, size, slices)},
        {"s": (1.0, 1.0, 1.0)},
    )
    dataset = SliceDataset(data, augment=True, seed=0)
    if with_map:
        dataset.attach(WEIGHT_KEY, (1 + rng.random((slices, size, size))).astype(np.float16))
    batches = iter(DataLoader(dataset, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(0)))
    next(batches)
    start, count = time.perf_counter(), 0
    for _ in batches:
        count += 1
    return (time.perf_counter() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()
    for size in SIZES:
        steps = time_steps(size, args.device, args.reps)
        print(
            f"step alone, {size}x{size} batch {BATCH} on {args.device}: "
            + ", ".join(f"{name} {seconds * 1e3:.1f} ms" for name, seconds in steps.items())
        )
    torch.set_num_threads(1)
    for size in SIZES:
        plain, with_map = time_loading(size, False), time_loading(size, True)
        print(
            f"load + augment, {size}x{size} batch {BATCH}, 1 CPU thread: {plain * 1e3:.1f} ms "
            f"({with_map * 1e3:.1f} ms with TRM's map)"
        )


if __name__ == "__main__":
    main()
