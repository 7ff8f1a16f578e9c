"""Versioned results: a built-in method's output may change only together with its version (docs/design.md §Vocabulary).

``reference_outputs.json`` holds, per built-in method and variant (defaults, and each other choice of a hyperparameter
with choices), what 3 steps of the runner's training loop give on a fixed tiny input: per step the loss and the
method's own term (loss - the shared Dice + CE), then the sum of squared weights, with the method's and the trainer's
versions. After a deliberate change, bump the version and record the outputs anew:

    NTBENCH_UPDATE_REFERENCE=1 python -m pytest tests/methods/test_versions.py
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from benchmarks.train import TRAINER_VERSION
from methods.base import METHODS
from methods.losses import base_loss

REFERENCE = Path(__file__).with_name("reference_outputs.json")
UPDATE = os.environ.get("NTBENCH_UPDATE_REFERENCE") == "1"
RECORD = "NTBENCH_UPDATE_REFERENCE=1 python -m pytest tests/methods/test_versions.py"
STEPS = 3
# Two runs on one machine with 1 and 2 torch threads differed by at most 2.8e-4 relative (lp-ft's L-BFGS probe),
# 1.2e-7 absolute on a term that is 0; a change of a method's maths moves its numbers by far more.
REL_TOL, ABS_TOL = 2e-3, 1e-5


def builtin_methods() -> list[str]:
    """Registered methods shipped with ntbench (plugins keep their own references)."""
    return [n for n in METHODS.names() if METHODS.get(n).__module__.startswith("methods.")]


def variants(name: str) -> dict[str, dict]:
    """``defaults``, and each non-default value of every hyperparameter with choices (``KEY=VALUE``)."""
    out: dict[str, dict] = {"defaults": {}}
    for key, spec in METHODS.get(name).hparams.items():
        out.update({f"{key}={c}": {key: c} for c in spec.choices or () if c != spec.default})
    return out


def outputs(loop: Callable[..., None], built: tuple, name: str, params: dict) -> list[float]:
    """Per step the loss and the method's own term, then the sum of squared target weights after ``STEPS`` steps."""
    source, target = copy.deepcopy(built)
    method = METHODS.get(name)(**params)
    values: list[float] = []
    loss = method.loss

    def recorded(batch: dict, logits: torch.Tensor, model: torch.nn.Module) -> torch.Tensor:
        value = loss(batch, logits, model)
        with torch.no_grad():
            values.extend([float(value), float(value - base_loss(logits, batch["label"]))])
        return value

    method.loss = recorded
    loop(method, None if method.init == "random" else source, target, steps=STEPS)
    return [*values, float(sum(p.detach().double().pow(2).sum() for p in target.parameters()))]


def problems(name: str, version: int, got: dict[str, list[float]], reference: dict) -> list[str]:
    """What is wrong with ``name``'s outputs ``got`` (per variant) against its stored ``reference``."""
    if reference is None:
        return [f"no reference output for method {name!r}: record it with {RECORD}"]
    if reference["version"] != version:
        return [
            f"method {name!r} is at version {version}, its reference output at {reference['version']}: "
            f"record the new output with {RECORD}"
        ]
    changed = [
        variant
        for variant, values in got.items()
        if variant not in reference["outputs"]
        or len(values) != len(reference["outputs"][variant])
        or not all(
            math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL) for a, b in zip(values, reference["outputs"][variant])
        )
    ]
    if not changed:
        return []
    module = METHODS.get(name).__module__.replace(".", "/")
    return [
        f"method {name!r}'s output changed ({', '.join(changed)}): bump its version ({module}.py: version = "
        f"{version + 1}), or TRAINER_VERSION (benchmarks/train.py) if the change is in code every method shares; "
        f"then record the new output with {RECORD}"
    ]


def _stored() -> dict:
    return (
        json.loads(REFERENCE.read_text()) if REFERENCE.exists() else {"trainer_version": TRAINER_VERSION, "methods": {}}
    )


@pytest.mark.parametrize("name", builtin_methods())
def test_output_changes_only_with_a_version_bump(name: str, pair: Callable, loop: Callable) -> None:
    built = pair("unet", source_classes=3, target_classes=2)  # the fixed tiny input's models (seeded)
    got = {variant: outputs(loop, built, name, params) for variant, params in variants(name).items()}
    version = METHODS.get(name).version
    stored = _stored()
    if UPDATE:
        stored["trainer_version"] = TRAINER_VERSION
        stored["methods"][name] = {"version": version, "outputs": got}
        REFERENCE.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")
        return
    assert stored["trainer_version"] == TRAINER_VERSION, (
        f"the trainer is at version {TRAINER_VERSION}, the reference outputs at {stored['trainer_version']}: "
        f"record them anew with {RECORD}"
    )
    assert not (found := problems(name, version, got, stored["methods"].get(name))), found[0]


def test_every_reference_belongs_to_a_builtin_method() -> None:
    assert sorted(_stored()["methods"]) == builtin_methods(), f"a method was added or removed: {RECORD}"


def test_a_change_to_delta_without_a_bump_is_caught(
    pair: Callable, loop: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard works: doubling DELTA's feature distance (a maths change) at the same version is reported."""
    import methods.delta

    distance = methods.delta.feature_distance
    monkeypatch.setattr(methods.delta, "feature_distance", lambda t, s: 2 * distance(t, s))
    got = {"defaults": outputs(loop, pair("unet", source_classes=3, target_classes=2), "delta", {})}
    reference = _stored()["methods"]["delta"]
    (message,) = problems("delta", reference["version"], got, reference)
    assert message.startswith("method 'delta''s output changed (defaults): bump its version (methods/delta.py:")
    assert problems("delta", reference["version"] + 1, got, reference)[0].startswith("method 'delta' is at version 2")


def test_a_trm_version_bump_renames_its_map_cache(pair: Callable, train_set: Callable, monkeypatch, tmp_path) -> None:
    """TRM's cached maps are named like its cell keys: the same at version 1, another name from version 2 on."""
    from methods.base import RunContext

    source, _ = pair("unet", source_classes=3, target_classes=2)
    data = train_set(2)
    trm = METHODS.get("trm")()
    trm.run = RunContext(None, None, None, torch.device("cpu"), cache_dir=tmp_path)
    first = trm._cache_path(source, data, None)
    monkeypatch.setattr(type(trm), "version", 2)
    assert trm._cache_path(source, data, None) != first
