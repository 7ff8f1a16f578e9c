"""Training loop driven by method hooks, and slice-wise prediction."""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from benchmarks.config import Budget
from datasets.slices import SliceDataset, SliceSet
from methods.base import Method


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
    base_lrs = [g["lr"] for g in opt.param_groups]
    gen = torch.Generator().manual_seed(zlib.crc32(f"loader:{seed}".encode()))
    loader = DataLoader(
        data, batch_size=budget.batch_size, shuffle=True, generator=gen, drop_last=len(data) >= budget.batch_size
    )
    losses: list[torch.Tensor] = []
    step, epoch = 0, 0
    with tqdm(total=steps, desc=desc, leave=False, disable=None) as bar:
        while step < steps:
            for batch in loader:
                if step >= steps:
                    break
                batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
                method.on_step(step, model)
                for group, lr in zip(opt.param_groups, base_lrs):
                    group["lr"] = lr * lr_factor(step, steps, budget.schedule)
                logits = model(batch["image"])
                loss = method.loss(batch, logits, model)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.detach())
                step += 1
                bar.update()
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
