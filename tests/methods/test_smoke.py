"""Every baseline runs the runner protocol for 2 steps on every backbone it serves."""

from __future__ import annotations

import copy

import pytest
import torch

from methods.base import METHODS

BASELINES = [
    ("l2sp", {}),
    ("freeze", {"scope": "encoder"}),
    ("freeze", {"scope": "encoder+decoder"}),
    ("lp-ft", {}),
    ("bss", {}),
    ("delta", {}),
    ("lwf", {}),
]


@pytest.mark.parametrize("backbone", ["unet", "basicunet"])
@pytest.mark.parametrize(("name", "params"), BASELINES, ids=[f"{n}-{'-'.join(p.values())}" for n, p in BASELINES])
def test_two_steps(pair, loop, name: str, params: dict, backbone: str) -> None:
    source, target = pair(backbone, source_classes=3, target_classes=2)
    loop(METHODS.get(name)(**params), source, target, steps=2)
    assert all(torch.isfinite(p).all() for p in target.parameters())


def test_all_baselines_on_smp_resnet18(pair, loop) -> None:
    """One step of each baseline on the BatchNorm backbone (copies of one built pair: building is slow)."""
    built = pair("smp-resnet18", source_classes=3, target_classes=2)
    for name, params in BASELINES:
        source, target = copy.deepcopy(built)
        loop(METHODS.get(name)(**params), source, target, steps=1)


@pytest.mark.parametrize("name", sorted({n for n, _ in BASELINES}))
def test_hparams_declared_and_cli_strings_accepted(name: str) -> None:
    cls = METHODS.get(name)
    assert cls.hparams and all(spec.help for spec in cls.hparams.values())
    method = cls(**{k: str(spec.default) for k, spec in cls.hparams.items()})  # as the CLI passes them
    assert method.params == {k: spec.default for k, spec in cls.hparams.items()}
