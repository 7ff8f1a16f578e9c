"""Milliseconds per training step, former vs device-resident pipeline, by numeric mode and slice size.

Run from the repository root: ``PYTHONPATH=. python tests/perf/pipeline_steps.py --device cuda --json out.json``.
Each configuration runs the training loop's step as ``benchmarks.train.train`` does (TRM, MONAI UNet, the
paper suites' SGD budget at batch 16; batch 8 and Adam at 64 px): ``host`` = DataLoader(SliceDataset) in
the training process and a copy of each batch to the device (the pipeline before issue 16), ``device`` =
DeviceBatches; with ``--amp bf16`` and/or ``--compile`` (``Budget.amp``, ``Budget.compile``). Warm-up steps
(compilation included) are not timed; the device is synchronised before and after the timed steps.
tests/perf/device_pipeline.sh calls it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import replace

import torch
from step_and_loading import random_dataset
from torch.utils.data import DataLoader

from benchmarks.backbones import build_backbone
from benchmarks.config import Budget
from benchmarks.suite import load_suite
from benchmarks.train import autocast, make_optimizer, step_forward
from datasets.device_batches import DeviceBatches
from methods import METHODS

SIZES = {64: Budget(), 192: load_suite("iseg2019-paper").budget, 240: load_suite("fets2021-paper").budget}


def batches(budget: Budget, pipeline: str, device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
    """Endless training batches of a random 256-slice set with TRM's map, from ``pipeline``."""
    data, gen = random_dataset(budget, with_map=True), torch.Generator().manual_seed(0)
    if pipeline == "device":
        resident = DeviceBatches(data, budget.batch_size, device, gen)
        return (b for _ in itertools.count() for b in resident.epoch())
    loader = DataLoader(data, batch_size=budget.batch_size, shuffle=True, generator=gen, drop_last=True)
    return ({k: v.to(device) for k, v in b.items()} for _ in itertools.count() for b in loader)


def ms_per_step(budget: Budget, pipeline: str, device: torch.device, steps: int, warmup: int) -> float:
    """Mean milliseconds per step over ``steps`` steps after ``warmup`` untimed ones."""
    torch.manual_seed(0)
    model = build_backbone("unet", 1, 2).to(device).train()
    method = METHODS.get("trm")()
    opt = make_optimizer(method.param_groups(model, budget.lr), budget)
    forward = step_forward(model, budget, device)
    source = batches(budget, pipeline, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step() -> None:
        batch = next(source)
        with autocast(budget, device):
            loss = method.loss(batch, forward(batch["image"]), model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--compile-sizes", type=int, nargs="*", default=[64, 240], help="sizes also run compiled")
    parser.add_argument("--json", help="write the records here")
    args = parser.parse_args()
    device = torch.device(args.device)
    modes = [("host", "off", False), ("device", "off", False), ("device", "bf16", False)]
    records = []
    for size in args.sizes:
        compiled = [("device", "off", True), ("device", "bf16", True)] if size in args.compile_sizes else []
        for pipeline, amp, compile_ in modes + compiled:
            budget = replace(SIZES[size], amp=amp, compile=compile_)
            start = time.perf_counter()
            ms = ms_per_step(budget, pipeline, device, args.steps, args.warmup)
            record = {
                "size": size,
                "batch": budget.batch_size,
                "pipeline": pipeline,
                "amp": amp,
                "compile": compile_,
                "ms_per_step": round(ms, 3),
                "wall_s": round(time.perf_counter() - start, 1),
                "device": str(device),
            }
            records.append(record)
            print(json.dumps(record), flush=True)
            if args.json:  # after every configuration: a time limit keeps what was measured
                with open(args.json, "w") as fh:
                    json.dump(records, fh, indent=1)


if __name__ == "__main__":
    main()
