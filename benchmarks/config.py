"""Cell configuration: the unit of work and its content-addressed key."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

from benchmarks.core.settings import NEVER, SETTINGS, declare, key_stable_defaults
from datasets.base import Task

# Setting fields added after the first release, per part of the key, with their defaults: a field at its default
# is not hashed into the cell key, so adding an option never invalidates results already in a store. The method's
# and the trainer's versions (``Method.version``, ``benchmarks.train.TRAINER_VERSION``) are hashed from 2 on.
# Derived from ``benchmarks.core.settings.SETTINGS`` (``key=ADDED``).
KEY_STABLE_DEFAULTS: dict[str, dict[str, Any]] = key_stable_defaults()
# Cell fields never hashed: the suite names runs, a checkpoint counts by content (through the data
# fingerprint), and how tuned values were chosen is not what runs (method_params and budget hold them).
UNHASHED = ("suite", *(s.attribute for s in SETTINGS if s.key == NEVER and s.holder == "cell"))


@dataclass(frozen=True)
@declare("budget")
class Budget:
    """Training budget and optimiser settings of one phase pair (source, target): every field is a setting
    (``benchmarks.core.settings``, holder ``budget``), keyword-only."""


@dataclass(frozen=True)
@declare("cell")
class Cell:
    """(suite, transfer, method + params, backbone, seed, few-shot k) with its budget; the settings a cell holds
    besides its budget (``benchmarks.core.settings``, holder ``cell``: split, fingerprint, threads, ...) are
    keyword-only fields."""

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

    @property
    def transfer(self) -> str:
        return f"{self.source_task or 'scratch'}->{self.target_task}"

    @property
    def pretrains_source(self) -> bool:
        """Whether the cell trains (or loads) a pretrained source model: an nnU-Net checkpoint is the source itself."""
        from benchmarks.backbones import is_nnunet_checkpoint  # torch: loaded wherever a cell's rows are made

        return bool(self.source_task) and not is_nnunet_checkpoint(self.checkpoint)

    @property
    def source_model_seed(self) -> int:
        """The seed the source model is trained with: ``source_seed`` when one model is shared, else the cell's."""
        return self.source_seed if self.source_seed >= 0 else self.seed

    @property
    def method_version(self) -> int:
        """The registered method's ``version``; a method not registered here (imported predictions) counts as 1."""
        from methods import METHODS

        return METHODS.get(self.method).version if self.method in METHODS else 1

    @property
    def trainer_version(self) -> int:
        """``benchmarks.train.TRAINER_VERSION``: every cell and source model is trained by that loop."""
        from benchmarks.train import TRAINER_VERSION

        return TRAINER_VERSION

    def normalised(self) -> dict[str, Any]:
        """Everything that changes the result; the suite name and code version are not in it, the method's and
        the trainer's versions are (from version 2 on).

        Fields added after the first release are left out while at their default
        (``KEY_STABLE_DEFAULTS``), and so are method hyperparameters a method added later
        (``Method.key_stable_defaults``), so that finished grids keep their keys.
        """
        d = asdict(self)
        for name in UNHASHED:
            del d[name]
        d["method_params"] = self.resolved_params()
        d.update({s.attribute: s.value(self) for s in SETTINGS if s.holder == "property" and s.key != NEVER})
        if not self.source_task:
            d["budget"]["source_steps"] = 0
            d["source_seed"] = -1  # scratch has no source model: its key is the same whatever the suite shares
        parts = [(d, KEY_STABLE_DEFAULTS["cell"]), (d["budget"], KEY_STABLE_DEFAULTS["budget"])]
        parts.append((d["method_params"], self._method_stable_defaults()))
        for part, defaults in parts:
            for name, default in defaults.items():
                if part.get(name) == default:
                    del part[name]
        return d

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
