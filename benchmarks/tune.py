"""Equal-budget hyperparameter tuning: seeded Optuna studies whose trials are validation cells of the store.

Every method gets the same number of trials over its declared search spaces plus the learning rate
(``BUDGET_SPACE``). One study per grid point without its seed: (method, pinned parameters, transfer,
few-shot K, budget); scratch's cells carry no source task, so it gets one study per target task. A trial
is one ``split="val"`` cell per tuning seed, scored by the mean Dice over the target task's validation
subjects (never its test subjects); its configuration is in the cell key, so a finished trial is read from
the store, never recomputed. The study is rebuilt on every run by replaying the store into a fresh
sampler with the same seed: the sampler is deterministic given the values it was told, so it proposes
the same configurations again and finds their cells (docs/design.md §Tuning). The best trial's
configuration then runs on the test seeds as ordinary ``split="test"`` cells with ``tuned_trials`` set.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from benchmarks.config import Cell
from methods.base import METHODS, MethodConfigError, Space

if TYPE_CHECKING:  # optuna loads when studies open, so --list-methods reads BUDGET_SPACE without it
    import optuna

    from benchmarks.store import Store

# The learning rate is tuned for every method, finetune and scratch included (issue 13: equal treatment). It is
# the target phase's (Budget.target_lr): the source model, trained once per budget, is shared by every trial.
BUDGET_SPACE: dict[str, Space] = {"lr": Space("log", 1e-4, 1e-2)}
BUDGET_FIELDS = {"lr": "target_lr"}
SAMPLERS = ("tpe", "random")
DEFAULT_TUNE_SEEDS = (100,)


class TuneError(ValueError):
    """Tuning settings are invalid (one line naming the option)."""


class TuneInterrupted(RuntimeError):
    """A trial cell did not finish (its worker was lost): the study stops before asking further trials."""


@dataclass(frozen=True)
class TuneConfig:
    """Trials per study, the seeds trials train with (disjoint from the test seeds), the sampler, and
    search-space overrides (``"lr"`` or ``"METHOD.KEY"`` -> Space)."""

    trials: int
    seeds: tuple[int, ...] = DEFAULT_TUNE_SEEDS
    sampler: str = "tpe"
    space: dict[str, Space] = field(default_factory=dict)

    def check(self, test_seeds: Iterable[int], methods: Iterable[str]) -> None:
        """Raise ``TuneError`` on a trial count below 1, an unknown sampler, overlapping seeds or an unknown
        override."""
        if self.trials < 1:
            raise TuneError(f"--tune {self.trials}: the number of trials must be >= 1")
        if self.sampler not in SAMPLERS:
            raise TuneError(f"tune sampler {self.sampler!r}; valid: {', '.join(SAMPLERS)}")
        if not self.seeds:
            raise TuneError("tune seeds: give at least one tuning seed")
        shared = sorted(set(self.seeds) & set(test_seeds))
        if shared:
            raise TuneError(f"tune seeds {shared} are also test seeds: tuning seeds must differ from --seeds")
        methods = list(methods)
        for name in self.space:
            method, dot, key = name.partition(".")
            if not dot and name in BUDGET_SPACE:
                continue
            if not dot or method not in methods or key not in METHODS.get(method).hparams:
                valid = ", ".join([*BUDGET_SPACE, *(f"{m}.{k}" for m in methods for k in METHODS.get(m).hparams)])
                raise TuneError(f"tune space {name!r}: not a tuned parameter of this run; valid: {valid}")


def parse_space_override(name: str, value: Any, spaces: dict[str, Space]) -> Space:
    """A suite's ``space: {NAME: [low, high]}`` (or a list of values for a choice) as a Space of the declared
    kind; ``spaces`` maps names to the declared spaces."""
    declared = spaces.get(name)
    if declared is None:
        raise TuneError(f"tune space {name!r}: no declared search space; valid: {', '.join(sorted(spaces))}")
    if not isinstance(value, list | tuple) or not value:
        raise TuneError(f"tune space {name!r}: expected a list ([low, high], or the values of a choice)")
    try:
        if declared.kind == "choice":
            return Space("choice", choices=tuple(value))
        if len(value) != 2:
            raise TuneError(f"tune space {name!r}: expected [low, high], got {list(value)}")
        return declared.with_bounds(*value)
    except MethodConfigError as exc:
        raise TuneError(f"tune space {name!r}: {exc}") from None


def declared_spaces(methods: Iterable[str]) -> dict[str, Space]:
    """Every tunable name of a run: ``lr`` and ``METHOD.KEY`` for each declared space."""
    spaces = dict(BUDGET_SPACE)
    for method in methods:
        for key, spec in METHODS.get(method).hparams.items():
            if spec.space is not None:
                spaces[f"{method}.{key}"] = spec.space
    return spaces


def search_space(cell: Cell, overrides: dict[str, Space]) -> dict[str, Space]:
    """The spaces a study searches: the learning rate and the method's declared ones, minus pinned parameters."""
    space = {name: overrides.get(name, s) for name, s in BUDGET_SPACE.items()}
    for key, spec in METHODS.get(cell.method).hparams.items():
        if spec.space is not None and key not in cell.method_params:
            space[key] = overrides.get(f"{cell.method}.{key}", spec.space)
    return space


def suggest(trial: optuna.Trial, name: str, space: Space) -> Any:
    """One value from ``space``; floats rounded to 3 significant digits, so keys and tables stay readable."""
    if space.kind == "choice":
        return trial.suggest_categorical(name, list(space.choices))
    if space.kind == "int":
        return trial.suggest_int(name, int(space.low), int(space.high))
    value = trial.suggest_float(name, space.low, space.high, log=space.kind == "log")
    return float(f"{value:.3g}")


def apply(cell: Cell, params: dict[str, Any]) -> Cell:
    """``cell`` with a trial's configuration: budget entries (``lr``) into the budget, the rest method params;
    ``tuned_params`` names them all (the leaderboard names a tuned method by its other, pinned, params)."""
    budget = replace(cell.budget, **{BUDGET_FIELDS[k]: v for k, v in params.items() if k in BUDGET_SPACE})
    method_params = {**cell.method_params, **{k: v for k, v in params.items() if k not in BUDGET_SPACE}}
    return replace(cell, budget=budget, method_params=method_params, tuned_params=tuple(sorted(params)))


def study_key(cell: Cell) -> str:
    """The study a grid cell belongs to: its key without the seed."""
    return replace(cell, seed=0).key


@dataclass
class Study:
    """One Optuna study: the grid cells it serves (one per test seed) and its trials so far."""

    cells: list[Cell]
    space: dict[str, Space]
    study: optuna.Study
    trials: list[tuple[dict[str, Any], float | None]] = field(default_factory=list)

    @property
    def base(self) -> Cell:
        return self.cells[0]

    def trial_cells(self, number: int, params: dict[str, Any], seeds: Iterable[int]) -> list[Cell]:
        """Trial ``number``: one validation cell per tuning seed with the trial's configuration."""
        return [replace(apply(self.base, params), seed=s, split="val", trial=number) for s in seeds]

    def best(self) -> tuple[dict[str, Any], float] | None:
        """The finished trial with the highest mean validation Dice (the earliest on ties); None if none finished."""
        done = [(value, -i, params) for i, (params, value) in enumerate(self.trials) if value is not None]
        if not done:
            return None
        value, _, params = max(done, key=lambda t: (t[0], t[1]))
        return params, value

    def test_cells(self) -> list[Cell]:
        """The grid cells with the best trial's configuration and ``tuned_trials``; declared defaults if no
        trial finished."""
        best = self.best()
        if best is None:
            return list(self.cells)
        return [replace(apply(c, best[0]), tuned_trials=len(self.trials)) for c in self.cells]


def make_sampler(name: str, seed: int, trials: int) -> optuna.samplers.BaseSampler:
    """Seeded TPE (its random start-up phase at most half of the trials) or random search."""
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # Bergstra et al. 2011 (TPE); Optuna's default 10 start-up trials would make a small budget pure random search.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(1, trials // 2)))


def open_studies(cells: list[Cell], config: TuneConfig) -> list[Study]:
    """Group grid cells into studies (one per cell key without the seed), each with a fresh seeded sampler."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(study_key(cell), []).append(cell)
    studies = []
    for key, group in groups.items():
        seed = zlib.crc32(f"{key}:{config.sampler}".encode())
        sampler = make_sampler(config.sampler, seed, config.trials)
        study = optuna.create_study(direction="maximize", sampler=sampler, study_name=key)
        studies.append(Study(group, search_space(group[0], config.space), study))
    return studies


def trial_value(store: Store, cells: list[Cell]) -> float | None:
    """Mean Dice over every validation row of a trial's cells; None when one of them failed."""
    total, count = 0.0, 0
    for cell in cells:
        if store.state(cell.key) != "ok":
            return None
        dice = store.read_cell(cell.key)["dice"]
        total, count = total + float(dice.sum()), count + len(dice)
    value = total / count if count else float("nan")
    return value if math.isfinite(value) else None


def done(store: Store, cell: Cell) -> bool:
    """A trial cell counts as done once it is ok, failed or skipped (a lost cell reruns)."""
    return store.state(cell.key) in ("ok", "failed", "skipped")


def tune(
    cells: list[Cell],
    config: TuneConfig,
    store: Store,
    run: Callable[[list[Cell]], Any] | None,
    should_run: Callable[[Cell], bool] | None = None,
) -> tuple[list[Study], int]:
    """Run (or with ``run=None`` only replay) every study's trials, round by round.

    Round i asks trial i of every study, runs the cells not yet in the store through ``run`` in one batch
    (so the executor runs studies in parallel while each study stays sequential), then tells each study its
    value. Returns the studies and the number of trial cells still to run (0 unless ``run`` is None).
    """
    import optuna

    should_run = should_run or (lambda cell: not done(store, cell))
    studies = open_studies(cells, config)
    active, left = list(studies), 0
    for number in range(config.trials):
        asked = []
        for st in active:
            trial = st.study.ask()
            params = {name: suggest(trial, name, space) for name, space in st.space.items()}
            asked.append((st, trial, params, st.trial_cells(number, params, config.seeds)))
        todo = [c for *_, trial_cells in asked for c in trial_cells if should_run(c)]
        if todo and run is not None:
            run(todo)
            lost = [c for c in todo if not done(store, c)]
            if lost:  # telling a failure here would steer later trials away from what a rerun proposes
                raise TuneInterrupted(f"{len(lost)} trial cell(s) did not finish; rerun the same command to resume")
        elif todo:  # replay only: a study stops at its first trial not in the store
            pending = {id(st): sum(map(should_run, tc)) for st, *_, tc in asked}
            stopped = {key for key, count in pending.items() if count}
            left += sum(pending[key] + len(config.seeds) * (config.trials - number - 1) for key in stopped)
            asked = [a for a in asked if id(a[0]) not in stopped]
            active = [st for st in active if id(st) not in stopped]
        for st, trial, params, trial_cells in asked:
            value = trial_value(store, trial_cells)
            st.trials.append((params, value))
            if value is None:
                st.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                st.study.tell(trial, value)
    return studies, left


def describe(study: Study) -> str:
    """One line: the study, its best trial's configuration and validation Dice."""
    best = study.best()
    head = f"{study.base.method} {study.base.transfer}"
    if best is None:
        return f"{head}: no trial finished; the test cells use the declared defaults"
    return f"{head}: best of {len(study.trials)} trial(s) {json.dumps(best[0], sort_keys=True)} val Dice {best[1]:.3f}"


def tune_config(suite_tune: dict[str, Any] | None, trials: int | None, sampler: str | None) -> TuneConfig | None:
    """The run's tuning: the suite's ``tune:`` with ``--tune N`` / ``--tune-sampler`` on top; None = no tuning."""
    if suite_tune is None and trials is None:
        return None
    base = dict(suite_tune or {})
    return TuneConfig(
        trials=trials if trials is not None else base["trials"],
        seeds=tuple(base.get("seeds") or DEFAULT_TUNE_SEEDS),
        sampler=sampler or base.get("sampler", "tpe"),
        space=base.get("space") or {},
    )


def plan_lines(studies: list[Study], config: TuneConfig, left: int) -> list[str]:
    """Dry-run lines: the trial cells of every study, those in the store, those left."""
    total = len(studies) * config.trials * len(config.seeds)
    return [
        f"tuning: {len(studies)} stud(ies) x {config.trials} trial(s) x {len(config.seeds)} tuning seed(s) "
        f"{list(config.seeds)} = {total} trial cell(s) on the validation subjects: {total - left} done, {left} to run "
        f"({config.sampler} sampler); then the best configuration's test cells below"
    ]


def planned_test_cells(studies: list[Study], config: TuneConfig) -> list[Cell]:
    """The test cells a run will end with: the best configuration's for finished studies; for the others
    (configuration not known yet) stand-ins that count as to run."""
    return [
        c
        for s in studies
        for c in (s.test_cells() if len(s.trials) == config.trials else [replace(x, tuned_trials=-1) for x in s.cells])
    ]
