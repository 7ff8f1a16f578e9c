"""Freezing: frozen parameters and normalisation statistics stay bit-identical; the rest trains."""

from __future__ import annotations

import pytest
import torch

from methods.base import METHODS, MethodConfigError


def frozen_prefixes(target: torch.nn.Module, scope: str) -> list[str]:
    return [f"{n}." for n in target.encoder] if scope == "encoder" else ["body."]


@pytest.mark.parametrize("scope", ["encoder", "encoder+decoder"])
@pytest.mark.parametrize("backbone", ["unet", "basicunet", "smp-resnet18"])
def test_frozen_state_bit_identical(pair, loop, backbone: str, scope: str) -> None:
    source, target = pair(backbone)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    method = METHODS.get("freeze")(scope=scope)
    loop(method, source, target, steps=3, lr=0.05)
    prefixes = frozen_prefixes(target, scope)
    after = target.state_dict()
    frozen = [k for k in after if k.startswith(tuple(prefixes))]
    assert frozen and all(torch.equal(after[k], before[k]) for k in frozen)  # weights AND running stats
    trainable = {id(p) for g in method.param_groups(target, 1.0) for p in g["params"]}
    named = dict(target.named_parameters())
    assert all(id(named[k]) not in trainable for k in frozen if k in named)  # not in the optimiser
    assert not torch.equal(after["head.weight"], before["head.weight"])
    if scope == "encoder":  # the decoder trains, its BatchNorm statistics included
        moving = [k for k in after if k.startswith("body.") and not k.startswith(tuple(prefixes))]
        assert any(not torch.equal(after[k], before[k]) for k in moving)
        if backbone == "smp-resnet18":
            stats = [k for k in moving if k.endswith("running_mean")]
            assert stats and all(not torch.equal(after[k], before[k]) for k in stats)


def test_smp_has_running_stats_in_frozen_part(pair) -> None:
    """Guards the test above: the BatchNorm case is really exercised."""
    _, target = pair("smp-resnet18")
    assert any(k.startswith("body.encoder.") and k.endswith("running_var") for k in target.state_dict())


def test_bad_scope_is_refused() -> None:
    with pytest.raises(MethodConfigError, match="scope"):
        METHODS.get("freeze")(scope="decoder")
