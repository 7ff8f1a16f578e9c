"""Cell configuration: the unit of work and its content-addressed key."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

from benchmarks.core.options import DEFAULT_SPLIT_FRACTIONS
from benchmarks.threads import DEFAULT_THREADS
from datasets.base import Task

# Cell and Budget fields added after the first release, with their defaults: a field at its default is
# not hashed into the cell key, so adding an option never invalidates results already in a store. The method's
# and the trainer's versions (``Method.version``, ``benchmarks.train.TRAINER_VERSION``) are hashed from 2 on.
KEY_STABLE_DEFAULTS: dict[str, dict[str, Any]] = {
    "cell": {
        "split": "test",
        "trial": -1,
        "tuned_trials": 0,
        "split_fractions": DEFAULT_SPLIT_FRACTIONS,
        "threads": DEFAULT_THREADS,
        "method_version": 1,
        "trainer_version": 1,
    },
    "budget": {"amp": "off", "compile": False, "target_lr": None, "smoke": False},
}


@dataclass(frozen=True)
class Budget:
    """Training budget and optimiser settings of one phase pair (source, target)."""

    source_steps: int = 600
    target_steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | sgd (Nesterov, momentum 0.99, as nnU-Net)
    schedule: str = "constant"  # constant | poly (lr * (1 - t/T)^0.9, nnU-Net)
    weight_decay: float = 0.0
    size: int = 64  # in-plane slice size
    augment: bool = True
    amp: str = "off"  # off (float32) | bf16 (autocast; channels-last on CUDA), docs/scaling.md
    compile: bool = False  # torch.compile the training forward (Inductor), docs/scaling.md
    smoke: bool = False  # a --steps run: numbers that show the code runs, never a result (docs/design.md §Store)
    target_lr: float | None = None  # the target phase's learning rate when tuned (benchmarks/tune.py); None = lr


@dataclass(frozen=True)
class Cell:
    """(suite, transfer, method + params, backbone, seed, few-shot k) with its budget."""

    suite: str
    dataset: str
    source_task: str  # "" for methods trained from random init
    target_task: str
    method: str
    backbone: str
    seed: int
    few_shot: int = 0  # 0 = every training subject
    method_params: dict[str, Any] = field(default_factory=dict)
    budget: Budget = Budget()
    dataset_options: dict[str, Any] = field(default_factory=dict)
    split_seed: int = 0  # fixed across seeds: test subjects are the same blocks for every seed
    split_fractions: tuple[float, float, float] = DEFAULT_SPLIT_FRACTIONS  # train, val, test share of each group
    checkpoint: str = ""  # initial weights (--checkpoint) for source pretraining and scratch; "" = random
    fingerprint: str = ""  # hash of the split's subject ids and of the checkpoint's bytes
    split: str = "test"  # subjects scored: test, or val for a tuning trial (docs/design.md §Tuning)
    trial: int = -1  # tuning trial number of a val cell; -1 = not a trial
    tuned_trials: int = 0  # trials behind a test cell's hyperparameters; 0 = declared defaults
    tuned_params: tuple[str, ...] = ()  # the hyperparameters its study chose (lr, method params); not in the key
    threads: int = DEFAULT_THREADS  # torch intra-op threads: CPU results depend on them bitwise (benchmarks/threads.py)

    @property
    def transfer(self) -> str:
        return f"{self.source_task or 'scratch'}->{self.target_task}"

    def normalised(self) -> dict[str, Any]:
        """Everything that changes the result; the suite name and code version are not in it, the method's and
        the trainer's versions are (from version 2 on).

        Fields added after the first release are left out while at their default
        (``KEY_STABLE_DEFAULTS``), and so are method hyperparameters a method added later
        (``Method.key_stable_defaults``), so that finished grids keep their keys.
        """
        from benchmarks.train import TRAINER_VERSION

        d = asdict(self)
        del d["suite"], d["checkpoint"]  # the checkpoint counts by content, through the fingerprint
        del d["tuned_params"]  # how the values were chosen, not what runs: method_params and budget hold them
        d["method_params"] = self.resolved_params()
        d["method_version"], d["trainer_version"] = self._method_version(), TRAINER_VERSION
        if not self.source_task:
            d["budget"]["source_steps"] = 0
        parts = [(d, KEY_STABLE_DEFAULTS["cell"]), (d["budget"], KEY_STABLE_DEFAULTS["budget"])]
        parts.append((d["method_params"], self._method_stable_defaults()))
        for part, defaults in parts:
            for name, default in defaults.items():
                if part.get(name) == default:
                    del part[name]
        return d

    def _method_version(self) -> int:
        """The registered method's ``version``; a method not registered here (imported predictions) counts as 1."""
        from methods import METHODS

        return METHODS.get(self.method).version if self.method in METHODS else 1

    def _method_stable_defaults(self) -> dict[str, Any]:
        """The method's hyperparameters added after its first release, at the value older cells ran with."""
        from methods import METHODS

        return METHODS.get(self.method).key_stable_defaults if self.method in METHODS else {}

    def resolved_params(self) -> dict[str, Any]:
        """The hyperparameters the cell runs with: the explicit ones plus the method's declared defaults.

        Keys hash these, so a default changed by a new release never reuses results computed under the
        old one. A method that is not registered here (e.g. imported predictions) keeps its explicit ones.
        """
        from methods import METHODS  # here: the configuration module itself stays free of torch

        if self.method not in METHODS:
            return dict(sorted(self.method_params.items()))
        return dict(sorted(METHODS.get(self.method)(**self.method_params).params.items()))

    @cached_property
    def key(self) -> str:
        blob = json.dumps(self.normalised(), sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]


def transfer_type(source: str, target: str, has_groups: bool) -> str:
    """Classify a transfer by what changes: group, modality, region (docs/design.md §Vocabulary)."""
    if not source:
        return "none"
    s, t = Task.parse(source, has_groups), Task.parse(target, has_groups)
    changed = [
        name
        for name, a, b in (
            ("cross-group", s.group, t.group),
            ("cross-modality", s.modality, t.modality),
            ("cross-task", s.regions, t.regions),
        )
        if a != b
    ]
    return changed[0] if len(changed) == 1 else ("mixed" if changed else "none")
