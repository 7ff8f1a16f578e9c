"""``python -m benchmarks.estimate``: every transferability estimator of a suite's source models, written into the
results folder for the leaderboard (docs/design.md §Transferability estimators, "Evaluation").

For every transfer, seed and few-shot K of the suite, the source model of the suite's ``finetune`` cell (the same
key as the run's cells: loaded from the cache, trained there only when no cell trained it yet) is scored by each
estimator on that cell's target training slices (the seed's few-shot draw, the data the cells fine-tune on). Where
the dataset has ground-truth risk (brainsim's dial), each estimator with a location map is also scored per
training subject: AUROC and average precision of the risk score -map (low transferability = high risk) against
the ground truth (risk > 0.5) over the pixels of the subject's training slices inside the brain (image != 0).
Rows go to ``OUT/estimators/<finetune cell key>.parquet``, written atomically; a file that already holds every
requested estimator is kept unless ``--force``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats as sps

from benchmarks.core.options import DEFAULT_CACHE, OneLineParser, add_split_fractions, check_folder, check_minimums
from benchmarks.core.schema import ESTIMATES_DIR
from benchmarks.threads import configure_openmp
from datasets.core.files import atomic_write

if TYPE_CHECKING:  # heavy (torch): imported once the options are valid
    import pandas as pd
    import torch

    from benchmarks.config import Cell
    from benchmarks.data import OpenDataset
    from benchmarks.suite import Suite
    from datasets.slices import SliceSet

PROG = "python -m benchmarks.estimate"
RISK_THRESHOLD = 0.5  # a pixel is at risk where the ground-truth risk map exceeds this (brainsim's maps are 0/1)


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for the boolean ``positive``; NaN unless both classes occur."""
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = sps.rankdata(score)  # mid-ranks: a tie counts one half
    # Hanley & McNeil, Radiology 1982, "The meaning and use of the area under a ROC curve": AUROC = U / (n1 n0)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(score: np.ndarray, positive: np.ndarray) -> float:
    """Average precision of ``score`` for the boolean ``positive`` (no interpolation); NaN without positives."""
    n_pos = int(positive.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-score, kind="stable")
    ranked, hits = score[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1]  # the last pixel of each tied score
    tp = np.cumsum(hits)[last]
    precision, recall = tp / (last + 1), tp / n_pos
    # AP = sum_k (R_k - R_{k-1}) P_k over descending distinct thresholds (scikit-learn's average_precision_score)
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def subject_map_scores(window_map: np.ndarray, slices: SliceSet, risk: np.ndarray, stride: int) -> list[dict]:
    """Per subject of ``slices``: AUROC and AP of -``window_map`` (expanded to pixels as TRM does) against
    ``risk`` (N, H, W) > RISK_THRESHOLD, over the brain pixels (image != 0) of the subject's slices."""
    import torch

    from methods.transferability import expand_windows

    full = expand_windows(torch.from_numpy(window_map), slices.images.shape[-2:], stride).numpy()
    rows = []
    for i, sid in enumerate(slices.subject_ids):
        mine = slices.subject_index == i
        brain = slices.images[mine, 0] != 0
        score = -np.broadcast_to(full, brain.shape)[brain]
        positive = risk[mine][brain] > RISK_THRESHOLD
        rows.append(
            {
                "subject_id": sid,
                "auroc": auroc(score, positive),
                "ap": average_precision(score, positive),
                "n_pixels": int(brain.sum()),
                "n_risk": int(positive.sum()),
            }
        )
    return rows


def parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="default", help="built-in suite name or a YAML path (default: default)")
    p.add_argument("--out", type=Path, default=Path("results"), help="results folder (default: results)")
    p.add_argument(
        "--estimators", nargs="+", default=["all"], metavar="NAME", help="estimators to compute (default: all)"
    )
    p.add_argument("--source", help="source task of one ad-hoc transfer (with --target), as on the runner")
    p.add_argument("--target", help="target task of one ad-hoc transfer (with --source)")
    p.add_argument("--data-root", type=Path, help="dataset folder (embedded datasets need none)")
    p.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE", help="as on the runner")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the suite's)")
    p.add_argument("--few-shot", type=int, nargs="+", metavar="K", help="few-shot K (default: the suite's)")
    p.add_argument("--steps", type=int, help="the runner's --steps of the run to match (a smoke run)")
    add_split_fractions(p, "the suite's")
    p.add_argument("--threads", type=int, help="the runner's torch threads per cell (default: as the runner's)")
    p.add_argument("--stride", type=int, default=4, help="window side of the location maps (default 4, as trm)")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help=f"cache (default: {DEFAULT_CACHE})")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--force", action="store_true", help="recompute files that already hold every estimator")
    return p


def check_args(args: argparse.Namespace) -> None:
    """Every option that needs no data; ``ValueError`` with a one-line message."""
    check_minimums(args, {"seeds": 0, "few_shot": 0, "steps": 1, "threads": 1, "stride": 1})
    if (args.source is None) != (args.target is None):
        raise ValueError("--source and --target go together")
    if args.data_root is not None and not args.data_root.is_dir():
        raise ValueError(f"--data-root {args.data_root}: no such folder")
    check_folder("--out", args.out)
    check_folder("--cache-dir", args.cache_dir)


def estimator_names(requested: list[str]) -> list[str]:
    """The registered estimators named (``all``: every one); an unknown name lists the valid ones."""
    from methods.estimators import ESTIMATORS

    if requested == ["all"]:
        return ESTIMATORS.names()
    for name in requested:
        ESTIMATORS.get(name)  # UnknownNameError names the valid ones
    return list(dict.fromkeys(requested))


def suite_of(args: argparse.Namespace) -> Suite:
    """The suite with the runner's overrides these options share (the same cells, so the same source keys)."""
    from benchmarks.grid import apply_settings
    from benchmarks.suite import load_suite

    suite = load_suite(args.suite)
    changes: dict = {}
    if args.source:
        changes["transfers"] = [(args.source, args.target)]
    for option in ("seeds", "few_shot"):
        if getattr(args, option) is not None:
            changes[option] = getattr(args, option)
    return apply_settings(replace(suite, **changes), args)  # --steps (a smoke run), --split-fractions, --dataset-option


def finetune_cells(suite: Suite, data: OpenDataset, threads: int) -> list[Cell]:
    """The suite's ``finetune`` cells as the runner builds them (one per transfer, seed and K; the first point of
    a finetune parameter grid), so their keys and source keys are the run's."""
    from benchmarks.grid import build_cells

    unique: dict[tuple[str, int, int], Cell] = {}
    for cell in build_cells(replace(suite, methods=["finetune"]), {"finetune": {}}, data):
        unique.setdefault((cell.transfer, cell.seed, cell.few_shot), replace(cell, threads=threads))
    return list(unique.values())


def estimate_cell(
    cell: Cell, data: OpenDataset, names: list[str], cache_dir: Path, device: torch.device, stride: int
) -> tuple[pd.DataFrame, str]:
    """The rows of one finetune cell's estimates (scores, and map scores where the dataset has ground truth),
    and whether its source model was loaded or trained."""
    import pandas as pd
    import torch

    from benchmarks.cell import code_version
    from benchmarks.config import transfer_type
    from benchmarks.sources import source_key, source_model, source_path
    from methods.estimators import PER_CLASS, estimate, estimate_maps, map_names

    key = source_key(cell)
    had_source = source_path(cache_dir, cell).exists()
    source, _ = source_model(cell, data, cache_dir, device)
    source.to(device).eval().requires_grad_(False)
    src, task = data.task(cell.source_task), data.task(cell.target_task)
    ids = data.train_ids(task, cell.few_shot, cell.seed)
    slices = data.slices(task, ids)
    scores = estimate(source, slices, names, num_classes=task.num_classes, device=device, seed=cell.seed)
    blank = {"subject_id": "", "auroc": float("nan"), "ap": float("nan"), "n_pixels": 0, "n_risk": 0}
    rows = [{"kind": "score", "estimator": n, "value": v, **blank} for n, v in scores.items()]
    mappable = [n for n in names if n in map_names()]
    has_risk = data.has_risk(src, task)
    risk = data.risk(src, task, ids) if mappable and has_risk else None
    if risk is not None:
        maps = estimate_maps(source, slices, mappable, stride=stride, num_classes=task.num_classes, device=device)
        for name, window_map in maps.items():
            for row in subject_map_scores(window_map, slices, risk, stride):
                rows.append({"kind": "map", "estimator": name, "value": float("nan"), **row})
    common = {
        "cell_key": cell.key,
        "source_key": key,
        "suite": cell.suite,
        "dataset": cell.dataset,
        "transfer": cell.transfer,
        "source_task": cell.source_task,
        "target_task": cell.target_task,
        "transfer_type": transfer_type(cell.source_task, cell.target_task, data.adapter.has_groups),
        "backbone": cell.backbone,
        "seed": cell.seed,
        "few_shot": cell.few_shot,
        "target_steps": cell.budget.target_steps,
        "data_fingerprint": cell.fingerprint,
        "smoke": cell.budget.smoke,
        "stride": stride,
        "per_class": PER_CLASS,
        "n_slices": len(slices),
        "n_subjects": len(ids),
        "has_risk": has_risk,
        "code_version": code_version(),
        "torch_version": torch.__version__,
        "device": str(device),
        "created_at": datetime.now(timezone.utc).isoformat(),
    }
    return pd.DataFrame([{**common, **row} for row in rows]), "loaded" if had_source else "trained (not in the cache)"


def is_done(path: Path, names: list[str]) -> bool:
    """Whether ``path`` holds a score of every estimator in ``names`` (and their map rows where it has risk)."""
    import pandas as pd
    import pyarrow as pa

    from methods.estimators import map_names

    try:
        old = pd.read_parquet(path, columns=["kind", "estimator", "has_risk"])
    except (OSError, ValueError, pa.ArrowException):
        return False
    scored = set(old.loc[old["kind"] == "score", "estimator"])
    mapped = set(old.loc[old["kind"] == "map", "estimator"])
    wanted_maps = {n for n in names if n in map_names()} if old["has_risk"].any() else set()
    return set(names) <= scored and wanted_maps <= mapped


def write(path: Path, frame: pd.DataFrame) -> None:
    """Atomically replace ``path`` with ``frame`` plus the rows of other estimators it held before."""
    import pandas as pd
    import pyarrow as pa

    if path.exists():
        try:
            old = pd.read_parquet(path)
            frame = pd.concat([old[~old["estimator"].isin(set(frame["estimator"]))], frame], ignore_index=True)
        except (OSError, ValueError, KeyError, pa.ArrowException):
            pass  # an unreadable file is replaced
    with atomic_write(path) as fh:
        frame.to_parquet(fh, index=False)


def run(args: argparse.Namespace) -> int:
    """Everything after the option checks."""
    import torch

    from benchmarks.core.device import DeviceError, resolve_device
    from benchmarks.data import open_suite_data
    from benchmarks.suite import SuiteError
    from benchmarks.summary import interpreter
    from benchmarks.threads import threads_per_cell
    from datasets.base import DataError
    from datasets.core.registry import UnknownNameError
    from methods import MethodConfigError
    from methods.model import BackboneError

    try:
        names = estimator_names(args.estimators)
        suite = suite_of(args)
        if suite.needs_data_root and args.data_root is None:
            raise ValueError(f"--suite {suite.name} runs on real data: give --data-root")
        device = resolve_device(args.device)
        threads = threads_per_cell(args.threads or 0)
        torch.set_num_threads(threads)
        data = open_suite_data(suite, args.data_root, args.cache_dir)
        cells = finetune_cells(suite, data, threads)
    except (
        ValueError,
        SuiteError,
        DataError,
        DeviceError,
        UnknownNameError,
        MethodConfigError,
        BackboneError,
    ) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    folder = args.out / ESTIMATES_DIR
    written = 0
    for cell in cells:
        path = folder / f"{cell.key}.parquet"
        what = f"{cell.transfer} seed={cell.seed} K={cell.few_shot}"
        if not args.force and is_done(path, names):
            print(f"{what}: done ({path})")
            continue
        frame, source = estimate_cell(cell, data, names, args.cache_dir, device, args.stride)
        write(path, frame)
        written += 1
        maps = "with map scores" if frame["has_risk"].iloc[0] else "no ground-truth risk: scores only"
        print(f"{what}: source model {source}; {len(names)} estimator(s), {maps} -> {path}")
    print(f"{written} of {len(cells)} file(s) written to {folder}")
    print(f"next: {interpreter()} -m leaderboard.build --results {args.out} --out {args.out / 'site'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse and check the options (one line and exit 2 on a bad one, nothing created), then run."""
    configure_openmp()  # the runner's start-up, before torch loads (benchmarks.threads)
    args = parser().parse_args(argv)
    try:
        check_args(args)
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
