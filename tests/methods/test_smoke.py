"""Every registered method, at its defaults and at each other choice of its hyperparameters, runs the
runner's training loop for 2 steps on every backbone (derived from the registry: a new method is covered)."""

from __future__ import annotations

import copy

import pytest
import torch

from methods.base import METHODS


def variants() -> list[tuple[str, dict]]:
    """(method, params): the defaults, plus each non-default value of every hyperparameter with choices."""
    out = []
    for name in METHODS.names():
        out.append((name, {}))
        for key, spec in METHODS.get(name).hparams.items():
            out += [(name, {key: choice}) for choice in spec.choices or () if choice != spec.default]
    return out


VARIANTS = variants()
IDS = [f"{n}-{'-'.join(map(str, p.values())) or 'defaults'}" for n, p in VARIANTS]


def _run(loop, built, name: str, params: dict, steps: int) -> torch.nn.Module:
    source, target = copy.deepcopy(built)
    method = METHODS.get(name)(**params)
    loop(method, None if method.init == "random" else source, target, steps=steps)
    return target


@pytest.mark.parametrize("backbone", ["unet", "basicunet"])
@pytest.mark.parametrize(("name", "params"), VARIANTS, ids=IDS)
def test_two_steps(pair, loop, name: str, params: dict, backbone: str) -> None:
    target = _run(loop, pair(backbone, source_classes=3, target_classes=2), name, params, steps=2)
    assert all(torch.isfinite(p).all() for p in target.parameters())


def test_every_method_on_smp_resnet18(pair, loop) -> None:
    """One step of each method at its defaults on the BatchNorm backbone (copies of one built pair)."""
    built = pair("smp-resnet18", source_classes=3, target_classes=2)
    for name in METHODS.names():
        _run(loop, built, name, {}, steps=1)


@pytest.mark.parametrize("name", METHODS.names())
def test_hparams_declared_and_cli_strings_accepted(name: str) -> None:
    cls = METHODS.get(name)
    assert all(spec.help for spec in cls.hparams.values())
    method = cls(**{k: str(spec.default) for k, spec in cls.hparams.items() if spec.default is not None})
    assert method.params == {k: spec.default for k, spec in cls.hparams.items()}
