"""Shared fixtures: tiny source/target pairs, random training slices, and the runner's own training loop."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from torch import nn

import methods.bss  # noqa: F401 - importing registers the baselines
import methods.delta  # noqa: F401
import methods.freeze  # noqa: F401
import methods.l2sp  # noqa: F401
import methods.lpft  # noqa: F401
import methods.lwf  # noqa: F401
from benchmarks.backbones import build_backbone
from benchmarks.config import Budget
from benchmarks.train import train
from datasets.slices import SliceDataset, SliceSet
from methods.base import Method, RunContext

CPU = torch.device("cpu")


def make_pair(
    backbone: str, source_classes: int = 3, target_classes: int = 2, seed: int = 0
) -> tuple[nn.Module, nn.Module]:
    """A frozen source model and a target initialised from it (head re-initialised if class counts differ)."""
    torch.manual_seed(seed)
    source = build_backbone(backbone, 1, source_classes)
    target = copy.deepcopy(source)
    if target.num_classes != target_classes:
        target.reset_head(target_classes)
    source.eval().requires_grad_(False)
    return source, target


def make_batch(classes: int, batch: int = 2, size: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(batch, 1, size, size, generator=g),
        "label": torch.randint(0, classes, (batch, size, size), generator=g),
        "index": torch.arange(batch),
    }


def make_train_set(classes: int, slices: int = 4, size: int = 32, seed: int = 0) -> SliceDataset:
    """What ``prepare`` receives as training data: a SliceDataset of random slices and labels."""
    b = make_batch(classes, batch=slices, size=size, seed=seed)
    return SliceDataset(SliceSet.of_volume(b["image"].numpy(), b["label"].numpy()))


def make_risk(data: SliceDataset, seed: int = 0) -> np.ndarray:
    """Seeded ground-truth risk maps in [0, 1], one per training slice (N, H, W), for methods that read them."""
    return np.random.default_rng(seed).uniform(size=data.slices.labels.shape)


def run_steps(
    method: Method,
    source: nn.Module | None,
    target: nn.Module,
    steps: int,
    lr: float = 1e-2,
    after_step: Callable[[int], None] | None = None,
) -> None:
    """``steps`` steps of the runner's own training loop (``benchmarks.train.train``) on random slices.

    ``after_step(i)`` runs after optimiser step i (an optimiser post-hook, registered at the first step).
    A method that asks for ground-truth risk maps (``needs_risk_maps``) gets seeded uniform ones.
    """
    data = make_train_set(target.num_classes)
    risk = make_risk(data) if method.needs_risk_maps() else None
    method.prepare(RunContext(source, target, data, CPU, total_steps=steps, risk_maps=risk))
    if after_step is not None:
        done: list[int] = []

        def hook(*_: object) -> None:
            after_step(len(done))
            done.append(1)

        on_step = method.on_step

        def register_then_step(step: int, model: nn.Module) -> None:
            if step == 0:
                method.run.optimizer.register_step_post_hook(hook)
            on_step(step, model)

        method.on_step = register_then_step
    train(target, data, steps, Budget(batch_size=2, lr=lr, augment=False), CPU, seed=0, method=method)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and a busy shared machine does not oversubscribe."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def pair() -> Callable[..., tuple[nn.Module, nn.Module]]:
    """``make_pair`` (fixtures hand out the helpers, so tests never import conftest)."""
    return make_pair


@pytest.fixture
def batch() -> Callable[..., dict[str, torch.Tensor]]:
    return make_batch


@pytest.fixture
def train_set() -> Callable[..., SliceDataset]:
    return make_train_set


@pytest.fixture
def loop() -> Callable[..., None]:
    return run_steps
