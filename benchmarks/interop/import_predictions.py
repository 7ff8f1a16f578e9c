"""``python -m benchmarks.interop.import_predictions``: score external predictions (e.g. nnU-Net's) as a method.

The folder holds one label map per test subject of the task, ``<subject id>.nii.gz`` with the task's
classes 0..C on the subject's image grid: what ``nnUNetv2_predict -i imagesTs`` writes for a dataset
made by ``python -m benchmarks.interop.export_nnunet``. Each prediction is put on ntbench's evaluation grid by
the same steps as the truth (the brain-holding axial slices, in-plane nearest-neighbour resize to the
suite's slice size) and scored with ``benchmarks.metrics.dice_hd95`` per subject and region, exactly
as a cell scores its model. The rows enter the results store as one cell of method ``--method``
trained on the target alone (``source_task`` empty), in the suite's setting, so the leaderboard
compares it with ntbench's methods (``leaderboard.build --scratch nnunet`` makes it the no-transfer
reference). Its cell key hashes the prediction files' bytes: other predictions are another cell.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.core.options import DEFAULT_CACHE, OneLineParser, UsageError, add_split_fractions, check_minimums
from benchmarks.threads import configure_openmp

if TYPE_CHECKING:
    from benchmarks.data import OpenDataset
    from datasets.base import Task

FILE_ENDING = ".nii.gz"


class PredictionsError(ValueError):
    """A predictions folder cannot be scored."""


def predictions_digest(files: list[Path]) -> str:
    """SHA-1 over the prediction files' names and bytes, in name order (the cell's identity)."""
    digest = hashlib.sha1()
    for path in sorted(files):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def score(data: OpenDataset, task: Task, folder: Path, size: int) -> list[dict]:
    """Dice/HD95 rows of every test subject of ``task`` from ``folder``'s predictions."""
    import nibabel as nib
    import numpy as np

    from benchmarks.metrics import dice_hd95
    from datasets import io as dio
    from datasets.preprocess import resize_inplane
    from datasets.slices import assemble_volume

    subjects = {s.id: s for s in data.adapter.task_subjects(task)}
    rows = []
    for sid in data.task_ids(task, "test"):
        path = folder / f"{sid}{FILE_ENDING}"
        if not path.is_file():
            raise PredictionsError(f"--predictions {folder}: no {path.name} for test subject {sid}")
        pred_img = nib.load(str(path))
        ref = nib.load(str(dio.split_channel(subjects[sid].images[task.modality])[0]))
        pred = np.asarray(pred_img.dataobj)
        if pred.shape != ref.shape[:3] or not np.allclose(pred_img.affine, ref.affine, atol=1e-3):
            raise PredictionsError(
                f"--predictions {path}: grid {pred.shape} differs from the subject's image {ref.shape[:3]}"
            )
        values = np.unique(pred)
        if values.min() < 0 or values.max() > len(task.regions) or not np.all(values == np.round(values)):
            raise PredictionsError(
                f"--predictions {path}: values {values.tolist()[:8]} outside classes 0..{len(task.regions)}"
            )
        slices = data.slices(task, [sid])
        on_grid = resize_inplane(pred.astype(np.int16)[..., slices.z], (size, size), label=True)
        volume = assemble_volume(slices, sid, np.moveaxis(on_grid, -1, 0))
        truth = assemble_volume(slices, sid, slices.labels)
        for cls, region in enumerate(task.regions, start=1):
            dice, hd = dice_hd95(volume == cls, truth == cls, slices.spacing[sid])
            rows.append({"subject_id": sid, "region": region, "dice": dice, "hd95": hd})
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m benchmarks.interop.import_predictions", description=__doc__.split("\n\n")[0])
    p.add_argument("--predictions", type=Path, required=True, help="folder of <subject id>.nii.gz label maps")
    p.add_argument("--task", required=True, help="target task the predictions segment, e.g. 01-t1-WT")
    p.add_argument("--method", default="nnunet", help="method name of the rows (default: nnunet)")
    p.add_argument("--out", type=Path, required=True, help="results folder (the runner's --out)")
    p.add_argument("--suite", default="default", help="suite whose setting the rows join (default: default)")
    p.add_argument("--dataset", help="dataset adapter (overrides the suite's)")
    p.add_argument("--backbone", help="backbone column of the setting to join (overrides the suite's)")
    p.add_argument("--data-root", type=Path, help="dataset folder (the embedded phantom needs none)")
    p.add_argument("--seed", type=int, default=0, help="seed column of the rows (the nnU-Net run's; default 0)")
    p.add_argument("--few-shot", type=int, default=0, metavar="K", help="training subjects nnU-Net used (0 = all)")
    p.add_argument("--steps", type=int, help="the runner's --steps of the cells to compare with (smoke runs)")
    add_split_fractions(p, "the suite's; give the export's")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help=f"cache (default: {DEFAULT_CACHE})")
    return p


def main(argv: list[str] | None = None) -> int:
    configure_openmp()  # the runner's start-up, before torch loads (benchmarks.threads)
    args = build_parser().parse_args(argv)
    from benchmarks.cell import cell_frame
    from benchmarks.data import open_suite_data
    from benchmarks.grid import apply_settings, cell_identity, make_cell
    from benchmarks.interop.export_nnunet import task_option
    from benchmarks.store import Store, StoreError
    from benchmarks.suite import SuiteError, load_suite
    from datasets.base import DataError
    from datasets.core.registry import UnknownNameError

    start = time.time()
    try:
        suite = load_suite(args.suite)
        check_minimums(args, {"steps": 1})
        identity = {k: v for k, v in (("dataset", args.dataset), ("backbone", args.backbone)) if v}
        suite = apply_settings(replace(suite, **identity), args)  # --steps: a smoke run, as the runner's
        if not args.predictions.is_dir():
            raise PredictionsError(f"--predictions {args.predictions}: no such folder")
        files = sorted(args.predictions.glob(f"*{FILE_ENDING}"))
        data = open_suite_data(suite, args.data_root, args.cache_dir)
        task = task_option(data, args.task)
        data.train_ids(task, args.few_shot, args.seed)  # the same few-shot check as the runner
        rows = score(data, task, args.predictions, suite.budget.size)
        store = Store(args.out)
        store.check_writable()
    except (PredictionsError, DataError, SuiteError, StoreError, UnknownNameError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    used = {f"{sid}{FILE_ENDING}" for sid in data.task_ids(task, "test")}
    digest = predictions_digest([f for f in files if f.name in used])
    # as the runner records it: the target as the suite or --target wrote it, no source (trained on the target)
    cell = make_cell(
        suite, "", args.task, args.method, args.seed, args.few_shot, {"predictions": digest}, cell_identity(data, None)
    )
    frame = cell_frame(cell, data.adapter.has_groups, rows, {}, "ok", "", "external", time.time() - start)
    store.write(cell.key, frame)
    mean = frame.groupby("region")["dice"].mean().round(3).to_dict()
    print(f"{args.method} on {task}: {len(rows)} rows (mean Dice {mean}) -> {store.path(cell.key)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
