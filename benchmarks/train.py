"""Training loop driven by method hooks, and slice-wise prediction.

Batches come from ``DeviceBatches`` (slices resident on the training device, bit-identical to the
former ``DataLoader(SliceDataset)`` batches). ``Budget.amp`` and ``Budget.compile`` select the
numeric mode of the step (docs/scaling.md, "Cheaper steps"); each is a different setting in the store.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from benchmarks import report
from datasets.device_batches import DeviceBatches
from datasets.slices import SliceDataset, SliceSet
from methods.base import Method

if TYPE_CHECKING:
    from benchmarks.config import Budget

# Bumped (1, 2, ...) whenever the training loop changes results for the same inputs: batches, augmentation, the
# optimiser step, seeding, the shared loss (methods/losses.py). Cell and source-model keys hash it from 2 on
# (docs/design.md §Vocabulary), so models and cells of an older trainer are never reused.
TRAINER_VERSION = 1


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def seed_all(seed: int, stream: str) -> None:
    """Seed torch and numpy from (seed, stream): independent streams per phase."""
    value = zlib.crc32(f"{stream}:{seed}".encode())
    torch.manual_seed(value)
    np.random.seed(value)


def make_optimizer(groups: list[dict], budget: Budget) -> torch.optim.Optimizer:
    """Adam, or SGD with Nesterov momentum 0.99 (nnU-Net, Isensee et al. 2021)."""
    if budget.optimizer == "adam":
        return torch.optim.Adam(groups, lr=budget.lr, weight_decay=budget.weight_decay)
    if budget.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=budget.lr, momentum=0.99, nesterov=True, weight_decay=budget.weight_decay)
    raise ValueError(f"budget optimizer {budget.optimizer!r}; valid: adam, sgd")


def lr_factor(step: int, total: int, schedule: str) -> float:
    """constant, or poly: (1 - step/total)^0.9 (nnU-Net, Isensee et al. 2021)."""
    return (1.0 - step / max(total, 1)) ** 0.9 if schedule == "poly" else 1.0


def step_forward(model: nn.Module, budget: Budget, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """The training forward of ``budget``'s numeric mode.

    ``amp="bf16"``: autocast to bfloat16 (no loss scaling needed: bfloat16 has float32's range),
    and on CUDA channels-last weights and inputs, the layout bf16 tensor-core convolutions want.
    ``compile``: ``torch.compile`` of the model (Inductor; fused kernels round differently).
    The parameters stay ``model``'s, so methods and ``predict`` see the trained weights.
    """
    channels_last = budget.amp == "bf16" and device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    run = torch.compile(model) if budget.compile else model

    def forward(image: torch.Tensor) -> torch.Tensor:
        if channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        return run(image)

    return forward


def autocast(budget: Budget, device: torch.device) -> torch.autocast:
    """The step's autocast context: bfloat16 with ``amp="bf16"``, else disabled (float32)."""
    if budget.amp not in ("off", "bf16"):
        raise ValueError(f"budget amp {budget.amp!r}; valid: off, bf16")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=budget.amp == "bf16")


def train(
    model: nn.Module,
    data: SliceDataset,
    steps: int,
    budget: Budget,
    device: torch.device,
    seed: int,
    method: Method | None = None,
    desc: str = "train",
) -> float:
    """Run ``steps`` optimiser steps; returns the mean loss of the last 10% of steps."""
    method = method or Method()
    model.to(device).train()
    opt = make_optimizer(method.param_groups(model, budget.lr), budget)
    if method.run is not None:
        method.run.optimizer = opt  # hooks may read it (docs/design.md §Methods)
    base_lrs = [g["lr"] for g in opt.param_groups]
    gen = torch.Generator().manual_seed(zlib.crc32(f"loader:{seed}".encode()))
    batches = DeviceBatches(data, budget.batch_size, device, gen)
    forward = step_forward(model, budget, device)
    losses: list[torch.Tensor] = []
    step, epoch = 0, 0
    with tqdm(total=steps, desc=desc, leave=False, disable=None) as bar:
        while step < steps:
            for batch in batches.epoch():
                if step >= steps:
                    break
                method.on_step(step, model)
                for group, lr in zip(opt.param_groups, base_lrs):
                    group["lr"] = lr * lr_factor(step, steps, budget.schedule)
                with autocast(budget, device):
                    logits = forward(batch["image"])
                    loss = method.loss(batch, logits, model)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                method.after_backward(step, model)
                opt.step()
                losses.append(loss.detach())
                step += 1
                bar.update()
                report.tick()  # the cell's phase and step, for the run's heartbeat
                if step % 50 == 0 or step == steps:  # one host sync every 50 steps, not per step
                    if not math.isfinite(value := float(loss.detach())):
                        raise TrainingDiverged(f"{desc}: loss became {value} at step {step}")
            method.on_epoch_end(epoch, model)
            epoch += 1
    tail = losses[-max(1, len(losses) // 10) :]
    final = float(torch.stack(tail).mean()) if tail else float("nan")
    if not math.isfinite(final):
        raise TrainingDiverged(f"{desc}: loss became {final}")
    return final


@torch.inference_mode()
def predict(model: nn.Module, slices: SliceSet, device: torch.device, batch_size: int = 32) -> np.ndarray:
    """Arg-max class per pixel for every slice, (N, H, W) uint8."""
    model.to(device).eval()
    out = []
    for start in range(0, len(slices.images), batch_size):
        x = torch.from_numpy(slices.images[start : start + batch_size]).to(device)
        out.append(model(x).argmax(1).to(torch.uint8).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0,) + slices.labels.shape[1:], np.uint8)
