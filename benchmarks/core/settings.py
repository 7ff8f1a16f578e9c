"""A run's settings, each declared once (docs/design.md §Settings).

A setting is an input of a cell besides its identity (suite, dataset, transfer, method and hyperparameters,
backbone, seed, few-shot K): the training budget, the subject split, numeric modes, the thread count, the
tuning bookkeeping. Each is one ``Setting`` in ``SETTINGS``, in the results store's column order, and the rest
derives from that table: the fields of ``benchmarks.config.Budget`` and ``Cell`` (and of a suite), which of them
enter the cell key and the source model's key, the store's schema and the values of rows written before a
column existed, the leaderboard's and the run summary's setting columns, and what the runner's options set
(``--steps`` included). Standard library only, like the rest of the core.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from datasets.core.fractions import DEFAULT_SPLIT_FRACTIONS, check_fractions, fractions_text

# How a setting enters the cell key: always (a field of the first release), only when not at its default (added
# later: results already in a store keep their keys), or never.
ALWAYS, ADDED, NEVER = "always", "added", "never"
# Store columns: written since the first release, a setting column added later (unknown in older rows unless
# ``before`` says), or a column of the tuning bookkeeping (filled with ``before`` in older rows).
REQUIRED, SETTING, RUN = "required", "setting", "run"
GIVEN = "given"  # ``flag_value``: the option's own value


@dataclass(frozen=True)
class Setting:
    """One setting: its name, type and default, where a cell holds it, and how every layer treats it."""

    name: str  # the store column (the key's entry for a setting without one)
    type: type  # the column's type
    default: Any
    help: str
    holder: Literal["budget", "cell", "property", "process"]  # a field of Budget or of Cell, a Cell property
    # computed from other fields, or what the writing process supplies (its environment)
    attr: str = ""  # the attribute's name where it is not ``name`` (older code names; the key hashes it)
    attr_type: Any = None  # the attribute's type where it differs from the column's
    in_suite: bool = False  # a cell field a suite declares at its top level (budget fields: under ``budget``)
    check: Callable[[Any], Any] | None = None  # validates a suite's value and returns it normalised
    flag: str = ""  # the runner's option that sets it
    flag_value: Any = GIVEN  # what that option sets it to (GIVEN: the option's value)
    key: str = ALWAYS  # ALWAYS, ADDED or NEVER (above)
    source_key: bool = False  # enters the source model's key (an ADDED one when not at its default)
    column: str = ""  # REQUIRED, SETTING, RUN or "" (not stored)
    stored: Callable[[Any], Any] | None = None  # cell -> the column's value, where it is not the attribute's
    before: Any = None  # the value of rows (and keys) written before it existed; None: unknown
    separates: bool = True  # a different value is another setting (False: provenance or tuning bookkeeping)
    tuned: bool = False  # the tuner may choose it: a tuned cell's value is its study's, not the setting's
    transfer_only: bool = False  # only transferred cells have it (scratch: 0 or -1), so scratch rows join every value

    @property
    def attribute(self) -> str:
        """The attribute of the holder (and the name in the cell key)."""
        return self.attr or self.name

    def value(self, cell: Any) -> Any:
        """The cell's value of this setting (not for ``process`` ones)."""
        return getattr(cell.budget if self.holder == "budget" else cell, self.attribute)

    def column_value(self, cell: Any) -> Any:
        """What the store writes for ``cell`` (not for ``process`` ones)."""
        return self.stored(cell) if self.stored else self.value(cell)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def check_source_seed(value: Any) -> int:
    """A suite's ``source_seed``: an integer >= -1 (``ValueError`` otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise ValueError(f"{value!r}: must be an integer >= 0, or -1 for one source model per seed")
    return value


# fmt: off
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "target_steps", int, 300, "training steps of the target phase", "budget",
        flag="--steps", column=REQUIRED,
    ),
    Setting(
        "lr", float, 1e-3, "learning rate; the column holds the target phase's (a tuned cell's source keeps this)",
        "budget", source_key=True, column=SETTING, stored=lambda cell: cell.budget.target_lr or cell.budget.lr,
        tuned=True,
    ),
    Setting(
        "optimizer", str, "adam", "adam | sgd (Nesterov, momentum 0.99, as nnU-Net)", "budget",
        source_key=True, column=SETTING,
    ),
    Setting(
        "schedule", str, "constant", "constant | poly (lr * (1 - t/T)^0.9, nnU-Net)", "budget",
        source_key=True, column=SETTING,
    ),
    Setting("weight_decay", float, 0.0, "the optimiser's weight decay", "budget", source_key=True, column=SETTING),
    Setting(
        "source_steps", int, 600, "training steps of the source model (0 in the store where none is trained)",
        "budget", flag="--steps", source_key=True, column=SETTING,
        stored=lambda cell: cell.budget.source_steps if cell.pretrains_source else 0, transfer_only=True,
    ),
    Setting("batch_size", int, 8, "slices per training batch", "budget", source_key=True, column=SETTING),
    Setting("augment", bool, True, "MONAI augmentation of training batches", "budget", source_key=True, column=SETTING),
    Setting("slice_size", int, 64, "in-plane slice size", "budget", attr="size", source_key=True, column=SETTING),
    Setting(
        "split_seed", int, 0, "seed of the subject split, fixed across seeds: the same test subjects for every seed",
        "cell", in_suite=True, source_key=True, column=SETTING,
    ),
    Setting(
        "split_fractions", str, DEFAULT_SPLIT_FRACTIONS, "train, val, test share of each group's subjects", "cell",
        attr_type=tuple[float, float, float], in_suite=True, check=check_fractions, flag="--split-fractions",
        key=ADDED, column=SETTING, stored=lambda cell: fractions_text(cell.split_fractions),
        before=fractions_text(DEFAULT_SPLIT_FRACTIONS),
    ),
    Setting(
        "dataset_options", str, {}, "the dataset adapter's options", "cell", attr_type=dict[str, Any], in_suite=True,
        flag="--dataset-option", source_key=True, column=SETTING, stored=lambda cell: _json(cell.dataset_options),
    ),
    Setting(
        "source_seed", int, -1, "seed of the source model: -1 = the cell's seed (one source model per seed); N >= 0 = "
        "the one source model of seed N, fine-tuned by every seed (docs/design.md §Settings)", "cell", in_suite=True,
        check=check_source_seed, flag="--source-seed", key=ADDED, column=SETTING,
        stored=lambda cell: cell.source_seed if cell.pretrains_source else -1, before=-1, transfer_only=True,
    ),
    Setting(
        "data_fingerprint", str, "", "hash of the split's subject ids and of the --checkpoint file's bytes", "cell",
        attr="fingerprint", source_key=True, column=SETTING,
    ),
    Setting(
        "threads", int, 1, "torch intra-op threads: CPU results depend on them bitwise (benchmarks/threads.py)",
        "cell", flag="--threads", key=ADDED, source_key=True, column=SETTING,
    ),
    Setting(
        "omp_wait", str, "default", "OpenMP wait variables in effect, e.g. OMP_WAIT_POLICY=PASSIVE: speed only",
        "process", key=NEVER, column=SETTING, separates=False,
    ),
    Setting(
        "amp", str, "off", "off (float32) | bf16 (autocast; channels-last on CUDA), docs/scaling.md", "budget",
        flag="--amp", key=ADDED, source_key=True, column=SETTING,
    ),
    Setting(
        "compile", bool, False, "torch.compile the training forward (Inductor), docs/scaling.md", "budget",
        flag="--compile", key=ADDED, source_key=True, column=SETTING,
    ),
    Setting(
        "smoke", bool, False, "a --steps run: numbers that show the code runs, never a result (docs/design.md §Store)",
        "budget", flag="--steps", flag_value=True, key=ADDED, source_key=True, column=SETTING,
    ),
    Setting(
        "split", str, "test", "subjects scored: test, or val for a tuning trial (docs/design.md §Tuning)", "cell",
        key=ADDED, column=RUN, before="test", separates=False,
    ),
    Setting(
        "trial", int, -1, "tuning trial number of a val cell; -1 = not a trial", "cell",
        key=ADDED, column=RUN, before=-1, separates=False,
    ),
    Setting(
        "tuned_trials", int, 0, "trials behind a test cell's hyperparameters; 0 = declared defaults", "cell",
        key=ADDED, column=RUN, before=0, separates=False,
    ),
    Setting(
        "tuned_params", str, (), "the hyperparameters its study chose (JSON list; '[]' before the column: all)",
        "cell", attr_type=tuple[str, ...], key=NEVER, column=RUN,
        stored=lambda cell: json.dumps(list(cell.tuned_params)),
        before="[]", separates=False,
    ),
    Setting(
        "target_lr", float, None, "the target phase's learning rate (a suite's fine-tuning budget, or a tuned cell's:"
        " benchmarks/tune.py); None = lr",
        "budget", attr_type=float | None, key=ADDED,
    ),
    Setting(
        "checkpoint", str, "", "initial weights (--checkpoint) of source pretraining and scratch; counts by content,"
        " through data_fingerprint", "cell", flag="--checkpoint", key=NEVER,
    ),
    Setting("method_version", int, 1, "the method's version (Method.version)", "property", key=ADDED),
    Setting(
        "trainer_version", int, 1, "the trainer's version (benchmarks.train.TRAINER_VERSION)", "property",
        key=ADDED, source_key=True,
    ),
)
# fmt: on
# The cell's identity columns that also tell settings apart (the leaderboard never pools two datasets, ...).
IDENTITY_SETTINGS = ("dataset", "backbone", "few_shot")


def default(name: str) -> Any:
    """The default of the setting ``name``."""
    return next(s.default for s in SETTINGS if s.name == name)


def of(holder: str, spec: tuple[Setting, ...] | None = None) -> Iterator[Setting]:
    """The settings a ``holder`` (budget, cell, property, process) holds."""
    return (s for s in (SETTINGS if spec is None else spec) if s.holder == holder)


def columns(kind: str, spec: tuple[Setting, ...] | None = None) -> dict[str, type]:
    """Store columns of one kind (REQUIRED, SETTING, RUN) and their types, in write order."""
    return {s.name: s.type for s in (SETTINGS if spec is None else spec) if s.column == kind}


def stored_settings(spec: tuple[Setting, ...] | None = None) -> list[Setting]:
    """The settings the store writes per row, in its column order (target steps, the setting columns, tuning)."""
    spec = SETTINGS if spec is None else spec
    return [s for kind in (REQUIRED, SETTING, RUN) for s in spec if s.column == kind]


def leaderboard_settings(spec: tuple[Setting, ...] | None = None) -> tuple[str, ...]:
    """The columns that tell the leaderboard's settings apart: identity ones, then every stored setting that
    ``separates`` (not provenance, not tuning bookkeeping), in store order."""
    return (*IDENTITY_SETTINGS, *(s.name for s in stored_settings(spec) if s.separates))


def same_setting(spec: tuple[Setting, ...] | None = None) -> tuple[str, ...]:
    """The stored settings a run's cells share, so the run summary leaves out rows of another value: those that
    separate settings, except a tuned one (its study's choice) and a transferred-only one (scratch has none)."""
    return tuple(s.name for s in stored_settings(spec) if s.separates and not s.tuned and not s.transfer_only)


def transfer_only(spec: tuple[Setting, ...] | None = None) -> tuple[str, ...]:
    """The stored settings only transferred cells have (scratch holds 0 or -1): scratch rows match any value."""
    return tuple(s.name for s in stored_settings(spec) if s.transfer_only)


def key_stable_defaults(spec: tuple[Setting, ...] | None = None) -> dict[str, dict[str, Any]]:
    """Per part of the cell key (``cell``, ``budget``): the fields hashed only when not at this value."""
    spec = SETTINGS if spec is None else spec
    added = [s for s in spec if s.key == ADDED]
    return {
        "cell": {s.attribute: s.default for s in added if s.holder != "budget"},
        "budget": {s.attribute: s.default for s in added if s.holder == "budget"},
    }


def declare(holder: str, spec: tuple[Setting, ...] | None = None, suite: bool = False) -> Callable[[type], type]:
    """Class decorator, applied under ``@dataclass``: a keyword-only field per setting of ``holder`` (``suite``:
    only those a suite declares), with its type and default."""

    def add(cls: type) -> type:
        annotations = dict(cls.__dict__.get("__annotations__", {}))
        for s in of(holder, spec):
            if suite and not s.in_suite:
                continue
            annotations[s.attribute] = s.attr_type or s.type
            if isinstance(s.default, dict | list | set):
                declared = field(default_factory=partial(copy.deepcopy, s.default), kw_only=True)
            else:
                declared = field(default=s.default, kw_only=True)
            setattr(cls, s.attribute, declared)
        cls.__annotations__ = annotations
        return cls

    return add
