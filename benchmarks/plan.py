"""What a run would do, read-only: the dataset as it would be opened, the cells' states, and a cost estimate.

Nothing here writes: no dataset is generated, no subject preprocessed, no store or cache file created.
The estimate comes from a cost model measured on this machine (docs/design.md §Dry run): a few real
training steps and one prediction pass of the backbone at the budget's slice size and batch size, on
the run's device, with synthetic slices.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks.config import Budget, Cell
from benchmarks.data import OpenDataset, stratified_split
from datasets.base import DATASETS, DataError
from datasets.core.fractions import DEFAULT_SPLIT_FRACTIONS
from datasets.generated import no_generation
from datasets.preprocess import cache_key

if TYPE_CHECKING:
    import torch

    from benchmarks.store import Store
    from benchmarks.suite import Suite

CALIBRATION_STEPS = 8  # timed training steps, after 2 warm-up steps


def will_run(state: str | None, force: bool, retry_failed: bool) -> bool:
    """Absent and lost cells run; failed ones only with --retry-failed; every cell with --force."""
    return force or state in (None, "lost") or (state == "failed" and retry_failed)


def peek_dataset(
    name: str,
    data_root: Path | None,
    options: dict[str, Any],
    cache_dir: Path,
    size: int,
    split_seed: int,
    split_fractions: tuple[float, float, float] = DEFAULT_SPLIT_FRACTIONS,
) -> OpenDataset:
    """The dataset as ``open_dataset`` would open it, without generating or preprocessing anything.

    Every labelled subject is assumed to preprocess cleanly (``cached`` holds the paths preprocessing
    would write, present or not), so the split, and with it every cell key, is the run's unless a
    subject turns out bad. Raises ``NotGenerated`` for an embedded dataset not yet in the cache.
    """
    cls = DATASETS.get(name)
    with no_generation():  # adapters with generation options generate in __init__ (phantom aligned, brainsim)
        root = Path(data_root) if data_root else cls.default_root(cache_dir)
        adapter = cls(root, **options)
    subjects = adapter.labelled_subjects()
    if not subjects:
        raise DataError(f"--data-root {root}: no labelled subjects found for dataset {name!r}")
    folder, modalities = Path(cache_dir) / "subjects", adapter.modalities()
    cached = {
        s.id: folder / f"{cache_key(adapter.name, s, (size, size), modalities, adapter.label_values)}.npz"
        for s in subjects
    }
    split = stratified_split(adapter, sorted(cached), split_seed, split_fractions)
    return OpenDataset(name, adapter, cached, split, [])


def peek_suite_data(suite: Suite, data_root: Path | None, cache_dir: Path) -> OpenDataset:
    """``peek_dataset`` with the suite's dataset, options, slice size, split seed and split fractions."""
    options = (suite.dataset_options, cache_dir, suite.budget.size, suite.split_seed, suite.split_fractions)
    return peek_dataset(suite.dataset, data_root, *options)


@dataclass(frozen=True)
class CostModel:
    """Seconds per training step and per predicted slice, measured here; ``basis`` says how."""

    step_s: float
    slice_s: float
    basis: str


def calibrate(backbone: str, budget: Budget, num_classes: int, device: torch.device) -> CostModel:
    """Time ``CALIBRATION_STEPS`` real training steps (after 2 warm-up steps) and one prediction pass.

    Synthetic slices of the budget's size; the same ``train``/``predict`` code, optimiser, augmentation
    and batch size as a cell, on ``device``. Nothing is written.
    """
    from benchmarks.backbones import build_backbone
    from benchmarks.train import predict, train
    from datasets.slices import SliceDataset, SliceSet

    n, s = max(4 * budget.batch_size, 32), budget.size
    rng = np.random.default_rng(0)
    slices = SliceSet(
        images=rng.standard_normal((n, 1, s, s), dtype=np.float32),
        labels=rng.integers(0, num_classes, (n, s, s), dtype=np.uint8),
        subject_index=np.zeros(n, np.int32),
        z=np.arange(n, dtype=np.int32),
        subject_ids=["calibration"],
        volume_shape={"calibration": (s, s, n)},
        spacing={"calibration": (1.0, 1.0, 1.0)},
    )
    model = build_backbone(backbone, 1, num_classes)
    data = SliceDataset(slices, augment=budget.augment)
    train(model, data, 2, budget, device, seed=0, desc="calibrate")
    start = time.perf_counter()
    train(model, data, CALIBRATION_STEPS, budget, device, seed=0, desc="calibrate")
    step_s = (time.perf_counter() - start) / CALIBRATION_STEPS
    start = time.perf_counter()
    predict(model, slices, device)
    slice_s = (time.perf_counter() - start) / n
    basis = (
        f"calibrated just now: {CALIBRATION_STEPS} training steps of {backbone} on {s}x{s} slices, "
        f"batch {budget.batch_size}, on {device}"
    )
    return CostModel(step_s, slice_s, basis)


def count_test_slices(data: OpenDataset, target: str) -> int | None:
    """Slices the evaluation of a cell with this target predicts: test subjects x slices per subject.

    Slices per subject come from a preprocessed subject if one is cached, else from an image header's depth
    (an upper bound: preprocessing keeps only the slices that hold brain).
    """
    task = data.task(target)
    ids = data.task_ids(task, "test")
    done = [p for p in data.cached.values() if p.is_file()]
    if done:
        with np.load(done[0]) as arrays:
            per_subject = len(arrays["z"])
    else:
        import nibabel as nib

        if not ids:
            return 0
        subject = next(s for s in data.adapter.labelled_subjects() if s.id in ids)
        try:
            per_subject = int(nib.load(str(next(iter(subject.images.values())))).shape[2])
        except Exception:  # an unusual file: the estimate leaves evaluation out and says so
            return None
    return len(ids) * per_subject


def sources_to_train(cells: list[Cell], cache_dir: Path) -> dict[str, int]:
    """Source steps per source model the cells need that is not in the cache yet."""
    from benchmarks.sources import source_path

    sources = {source_path(cache_dir, c): c.budget.source_steps for c in cells if c.source_task}
    return {path.stem: n for path, n in sources.items() if not path.exists()}


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.1f} min"


def estimate(todo: list[Cell], source_steps: int, data: OpenDataset | None, model: CostModel) -> tuple[float, str]:
    """(seconds, one-line explanation) for ``todo`` cells plus ``source_steps`` of source training."""
    steps = sum(c.budget.target_steps for c in todo) + source_steps
    seconds = steps * model.step_s
    parts = [f"{steps} training steps x {model.step_s:.3f} s"]
    slices = {c.target_task: count_test_slices(data, c.target_task) for c in todo} if data is not None else {}
    if data is not None and all(v is not None for v in slices.values()):
        n = sum(slices[c.target_task] for c in todo)
        seconds += n * model.slice_s
        parts.append(f"predicting {n} test slices x {model.slice_s * 1000:.1f} ms")
        left_out = "data preparation"
    else:
        left_out = "evaluation and data preparation"
    text = (
        f"about {_duration(seconds)} on one device = {' + '.join(parts)} ({model.basis}; "
        f"leaves out {left_out} and assumes the machine's load stays as it is now)"
    )
    return seconds, text


def dry_run(
    cells: list[Cell],
    store: Store,
    cache_dir: Path,
    data: OpenDataset | None,
    cost_model: Callable[[], CostModel],
    force: bool = False,
    retry_failed: bool = False,
) -> str:
    """The grid's cells with their state, and the work left with its estimated time.

    ``data`` is None when the dataset is not generated yet: then no cell can be finished. ``cost_model``
    (e.g. a ``calibrate`` call) is measured only when there is work left.
    """
    states = {c.key: store.state(c.key) if data is not None else None for c in cells}
    todo = [c for c in cells if will_run(states[c.key], force, retry_failed)]
    rerun = {c.key for c in todo}
    lines = [f"{'key':<16}  {'method':<12} {'transfer':<28} {'seed':>4} {'k':>3}  state"]
    for c in cells:
        state = states[c.key]
        label = "todo" if state is None else f"{state} ({'rerun' if c.key in rerun else 'kept'})"
        key = c.key if data is not None else "(after data)"
        lines.append(f"{key:<16}  {c.method:<12} {c.transfer:<28} {c.seed:>4} {c.few_shot:>3}  {label}")
    count = {s: sum(v == s for v in states.values()) for s in ("ok", "failed", "lost", "skipped")}
    declined = f"{count['skipped']} skipped by their method, " if count["skipped"] else ""
    lines.append(
        f"{len(cells)} cells: {count['ok']} done, {count['failed']} failed, {count['lost']} lost "
        f"(worker died), {declined}{len(todo)} to run. A failed cell counts as done and is not rerun unless "
        "--retry-failed; a lost cell is rerun."
    )
    sources = sources_to_train(todo, cache_dir)
    if todo:
        _, text = estimate(todo, sum(sources.values()), data, cost_model())
        lines.append(f"work left: {len(todo)} cell(s) + {len(sources)} source model(s) to train; {text}")
    else:
        lines.append("work left: none")
    if data is not None:
        missing = sum(not p.is_file() for p in data.cached.values())
        if missing:
            lines.append(f"{missing} of {len(data.cached)} subjects are not preprocessed yet (the run caches them).")
    lines.append("Nothing was written: no results, no cache, no generated data.")
    return "\n".join(lines)
