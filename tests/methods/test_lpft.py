"""LP-FT: the body is frozen (weights and statistics) before the switch step and trains from it on."""

from __future__ import annotations

import pytest
import torch

from methods.base import METHODS, MethodConfigError

CPU = torch.device("cpu")


@pytest.mark.parametrize("backbone", ["unet", "smp-resnet18"])
def test_switch_at_stated_step(pair, loop, backbone: str) -> None:
    source, target = pair(backbone)
    method = METHODS.get("lp-ft")(probe_fraction=0.5)
    states = [{k: v.clone() for k, v in target.state_dict().items()}]
    loop(
        method,
        source,
        target,
        steps=4,
        lr=0.05,
        after_step=lambda step: states.append({k: v.clone() for k, v in target.state_dict().items()}),
    )
    assert method.switch_step == 2
    body = [k for k in states[0] if k.startswith("body.")]
    encoder = [k for k in body if k.startswith(tuple(f"{n}." for n in target.encoder))]
    for step in range(4):  # states[step + 1] is after optimiser step ``step``
        before, after = states[step], states[step + 1]
        changed = [k for k in encoder if not torch.equal(before[k], after[k])]
        assert (len(changed) > 0) == (step >= 2), f"step {step}: encoder changed {changed[:3]}"
        if step < 2:
            assert all(torch.equal(before[k], after[k]) for k in body)  # decoder and statistics too
        assert not torch.equal(before["head.weight"], after["head.weight"])


@pytest.mark.parametrize(("fraction", "steps", "switch"), [(0.0, 4, 0), (1.0, 4, 4), (0.3, 10, 3), (0.25, 10, 2)])
def test_switch_step_rounding(pair, fraction: float, steps: int, switch: int) -> None:
    source, target = pair("unet")
    method = METHODS.get("lp-ft")(probe_fraction=fraction)
    method.total_steps = steps
    method.prepare(source, target, [], CPU)
    assert method.switch_step == switch
    assert all(p.requires_grad == (switch == 0) for p in target.body.parameters())


def test_refuses_bad_fraction_and_unset_budget(pair) -> None:
    with pytest.raises(MethodConfigError, match="probe_fraction"):
        METHODS.get("lp-ft")(probe_fraction=1.5)
    with pytest.raises(MethodConfigError, match="total_steps"):
        METHODS.get("lp-ft")().prepare(None, pair("unet")[1], [], CPU)
