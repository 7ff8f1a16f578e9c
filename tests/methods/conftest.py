"""Shared fixtures: tiny source/target pairs and a mini training loop that follows the runner protocol."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

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
from methods.base import Method

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


def run_steps(
    method: Method,
    source: nn.Module | None,
    target: nn.Module,
    steps: int,
    lr: float = 1e-2,
    after_step: Callable[[int], None] | None = None,
) -> None:
    """The runner's protocol: total_steps, prepare, target.train(), optimiser from param_groups, hooks."""
    method.total_steps = steps
    method.prepare(source, target, [], CPU)
    target.train()
    opt = torch.optim.Adam(method.param_groups(target, lr), lr=lr)
    for step in range(steps):
        method.on_step(step, target)
        batch = make_batch(target.num_classes, seed=step)
        logits = target(batch["image"])
        loss = method.loss(batch, logits, target)
        assert torch.isfinite(loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step(step)
    method.on_epoch_end(0, target)


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
def loop() -> Callable[..., None]:
    return run_steps
