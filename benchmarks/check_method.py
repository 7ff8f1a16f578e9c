"""``python -m benchmarks.check_method NAME [--backbone B ...]``: the conformance battery for any method.

Runs a registered method, built-in or plugin, through the runner's own code (``benchmarks.cell.fine_tune``:
source pretraining, target initialisation, ``prepare``, the training loop) on a tiny generated phantom,
and checks what every method must guarantee (docs/design.md §Methods):

- every declared hyperparameter has a default and one-line help; unknown names and values of the wrong
  type, outside the declared choices or outside the declared range raise ``MethodConfigError``;
- a few steps on every backbone give finite losses and finite weights;
- the same seed gives the same weights;
- parameters the method keeps out of training (``requires_grad=False`` or in no optimiser group) are
  unchanged after training;
- nothing loads a test or validation subject while the method is prepared and trained.

A backbone the method declines (``Method.check`` gives a reason) is reported as ``SKIP`` with the reason.
Exit 0 when every check passes or is skipped, 1 with each failing check named, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.threads import configure_openmp

if TYPE_CHECKING:
    from methods.base import HParam

STEPS = 3
BAD_TEXT = "not-a-value"


class CheckFailed(AssertionError):
    """One conformance check did not hold; the message names it."""


@dataclass
class Result:
    check: str
    ok: bool
    reason: str = ""
    skipped: bool = False  # the method declined the backbone (ok, with the method's reason)

    def line(self) -> str:
        if self.skipped:
            return f"SKIP {self.check}: {self.reason}"
        return f"PASS {self.check}" if self.ok else f"FAIL {self.check}: {self.reason}"


def _outside(spec: HParam) -> list[float]:
    """Values just outside a declared range: its low bound when open, else one below it; one above its high bound."""
    values = []
    if spec.low is not None:
        values.append(spec.low if spec.low_open else spec.low - 1)
    if spec.high is not None:
        values.append(spec.high + 1)
    return values


def check_declarations(name: str) -> None:
    """Defaults and help for every hyperparameter; bad names and values raise MethodConfigError."""
    from methods import METHODS, MethodConfigError

    cls = METHODS.get(name)
    for key, spec in cls.hparams.items():
        if not (spec.help or "").strip():
            raise CheckFailed(f"hyperparameter {key!r} has no help text")
    cls()  # the defaults alone must construct
    bad: list[tuple[str, dict]] = [("an unknown hyperparameter", {"no_such_hyperparameter_": 1})]
    for key, spec in cls.hparams.items():
        if spec.choices is not None:
            bad.append((f"{key} outside its choices", {key: BAD_TEXT}))
        elif spec.default is not None and not isinstance(spec.default, str):
            bad.append((f"{key} of the wrong type", {key: BAD_TEXT}))
        bad += [(f"{key}={value!r} outside {spec.allowed()}", {key: value}) for value in _outside(spec)]
    for what, params in bad:
        try:
            cls(**params)
        except MethodConfigError:
            continue
        except Exception as exc:  # noqa: BLE001 - any other exception is the failure we report
            raise CheckFailed(f"{what} raised {type(exc).__name__}, not MethodConfigError") from None
        raise CheckFailed(f"{what} ({params}) was accepted")


@contextmanager
def _tiny_dataset() -> Iterator[object]:
    """A generated 8-subject phantom (one institution, 32x32x16) opened as the runner opens data."""
    from benchmarks.data import open_dataset
    from datasets.phantom import generate_phantom

    with tempfile.TemporaryDirectory(prefix="ntbench-check-") as tmp:
        root = generate_phantom(Path(tmp) / "phantom", n_subjects=8, n_groups=1, shape=(32, 32, 16), seed=0)
        yield open_dataset("phantom", root, {}, Path(tmp) / "cache", size=32, split_seed=0), Path(tmp) / "cache"


class _Spy:
    """Records what a run does: subjects loaded, losses, parameters at the start of training."""

    def __init__(self, data: object, method_cls: type) -> None:
        self.loaded: set[str] = set()
        self.losses: list[float] = []
        self.frozen: dict[str, object] = {}
        self._data, self._cls = data, method_cls

    @contextmanager
    def watching(self) -> Iterator[None]:
        import torch

        slices, loss, groups = self._data.slices, self._cls.loss, self._cls.param_groups
        own = {hook: hook in vars(self._cls) for hook in ("loss", "param_groups")}
        spy = self

        def slices_spy(task, ids):  # noqa: ANN001, ANN202 - same signature as OpenDataset.slices
            spy.loaded.update(ids)
            return slices(task, ids)

        def loss_spy(method, batch, logits, target_model):  # noqa: ANN001, ANN202
            value = loss(method, batch, logits, target_model)
            spy.losses.append(float(value.detach()))
            return value

        def groups_spy(method, target_model, lr):  # noqa: ANN001, ANN202
            out = groups(method, target_model, lr)
            trained = {id(p) for g in out for p in g["params"]}
            spy.frozen = {
                n: p.detach().clone()
                for n, p in target_model.named_parameters()
                if not p.requires_grad or id(p) not in trained
            }
            return out

        self._data.slices = slices_spy
        self._cls.loss, self._cls.param_groups = loss_spy, groups_spy
        try:
            with torch.random.fork_rng(devices=[]):
                yield
        finally:
            del self._data.slices
            for hook, original in (("loss", loss), ("param_groups", groups)):
                if own[hook]:
                    setattr(self._cls, hook, original)
                else:
                    delattr(self._cls, hook)  # inherited: back to the base class's hook


def _train(name: str, backbone: str, data: object, cache: Path) -> tuple[object, _Spy]:
    """One cell's fine-tuning through the runner's code, with its spy."""
    import torch

    from benchmarks.cell import fine_tune
    from benchmarks.config import Budget, Cell
    from benchmarks.train import TrainingDiverged
    from methods import METHODS

    cls = METHODS.get(name)
    budget = Budget(source_steps=2, target_steps=STEPS, batch_size=2, size=32, lr=1e-3)
    source = "" if cls.init == "random" else "*-t2-WT"
    cell = Cell("check", "phantom", source, "*-t1-TC", name, backbone, seed=0, few_shot=2, budget=budget)
    torch.set_num_threads(cell.threads)  # as a run's cell: one thread, robust on a shared machine
    spy = _Spy(data, cls)
    try:
        with spy.watching():
            target, _, _ = fine_tune(cell, data, cache, torch.device("cpu"))
    except TrainingDiverged:
        _first_non_finite(spy.losses)
        raise
    return target, spy


def _first_non_finite(losses: list[float]) -> None:
    for step, value in enumerate(losses):
        if not math.isfinite(value):
            raise CheckFailed(f"loss is not finite at step {step} ({value})")


def check_training(name: str, backbone: str, data: object, cache: Path) -> None:
    """Finite losses and weights, the same weights for the same seed, frozen parameters unchanged."""
    import torch

    target, spy = _train(name, backbone, data, cache)
    _first_non_finite(spy.losses)
    if len(spy.losses) != STEPS:
        raise CheckFailed(f"the training loop called loss {len(spy.losses)} times for {STEPS} steps")
    params = dict(target.named_parameters())
    for pname, p in params.items():
        if not torch.isfinite(p).all():
            raise CheckFailed(f"weight {pname} is not finite after {STEPS} steps")
    for pname, before in spy.frozen.items():
        if not torch.equal(params[pname].detach().cpu(), before.cpu()):
            raise CheckFailed(f"parameter {pname} is kept out of training but changed")
    test_ids = set(data.split["test"]) | set(data.split["val"])
    touched = sorted(spy.loaded & test_ids)
    if touched:
        raise CheckFailed(f"loaded test/validation subject(s) {touched} during training")
    again, _ = _train(name, backbone, data, cache)
    for pname, p in again.named_parameters():
        if not torch.equal(p, params[pname]):
            raise CheckFailed(f"the same seed gave different weights ({pname})")


def run_checks(name: str, backbones: list[str]) -> list[Result]:
    """Every check for ``name`` on each backbone; failures are collected, not raised."""
    results: list[Result] = []

    def record(check: str, fn: Callable[[], None]) -> None:
        from benchmarks.cell import CellSkipped

        try:
            fn()
            results.append(Result(check, True))
        except CellSkipped as exc:
            results.append(Result(check, True, str(exc), skipped=True))
        except CheckFailed as exc:
            results.append(Result(check, False, str(exc)))
        except Exception as exc:  # noqa: BLE001 - a crash inside the method is a failed check, with its reason
            results.append(
                Result(check, False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            )

    record("declarations", lambda: check_declarations(name))
    with _tiny_dataset() as (data, cache):
        for backbone in backbones:
            record(f"training on {backbone}", lambda b=backbone: check_training(name, b, data, cache))
    return results


def main(argv: list[str] | None = None) -> int:
    configure_openmp()  # the runner's start-up, before torch loads (benchmarks.threads)
    p = argparse.ArgumentParser(prog="python -m benchmarks.check_method", description=__doc__.splitlines()[0])
    p.add_argument("name", help="registered method name (built-in or plugin)")
    p.add_argument("--backbone", nargs="+", default=["unet"], help="backbones to train on (default: unet)")
    args = p.parse_args(argv)
    from benchmarks.backbones import BACKBONES
    from datasets.core.registry import UnknownNameError
    from methods import METHODS

    try:
        METHODS.get(args.name)
        for backbone in args.backbone:
            BACKBONES.get(backbone)
    except UnknownNameError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results = run_checks(args.name, args.backbone)
    for result in results:
        print(result.line())
    failed = [r for r in results if not r.ok]
    skipped = sum(r.skipped for r in results)
    passed = len(results) - len(failed) - skipped
    print(f"{args.name}: {passed} passed, {len(failed)} failed" + (f", {skipped} skipped" if skipped else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
