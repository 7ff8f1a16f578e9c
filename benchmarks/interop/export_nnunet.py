"""``python -m benchmarks.interop.export_nnunet``: one ntbench task as an nnU-Net v2 raw dataset, with ntbench's split.

Writes ``OUT/DatasetNNN_<name>/``: ``imagesTr``/``labelsTr`` (the task's training subjects, or the
few-shot draw of ``--few-shot K --seed S``, plus its validation subjects), ``imagesTs``/``labelsTs``
(its test subjects), ``dataset.json`` and ``splits_final.json`` whose fold 0 is ntbench's train/val
split, so ``nnUNetv2_train ID 2d 0`` trains and validates on what ntbench's cells use and never sees a
test subject. Layout and dataset.json fields: nnU-Net v2 documentation, "dataset_format.md".
Images keep their voxel data, spacing and orientation (affine); labels are the task's classes 0..C.
The dataset folder is built under a temporary name and renamed into place: it is complete or absent.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

from benchmarks.core.options import (
    DEFAULT_CACHE,
    OneLineParser,
    UsageError,
    add_split_fractions,
    check_folder,
    check_minimums,
)
from benchmarks.threads import configure_openmp
from datasets import io as dio
from datasets.base import DataError, Subject, Task
from datasets.core.fractions import DEFAULT_SPLIT_FRACTIONS, fractions_text

if TYPE_CHECKING:
    from benchmarks.data import OpenDataset

FILE_ENDING = ".nii.gz"


def dataset_name(dataset: str, task: str) -> str:
    """``phantom`` + ``*-t1ce-ED+TC`` -> ``phantom_all-t1ce-ED_TC`` (nnU-Net names: letters, digits, - and _)."""
    return re.sub(r"[^A-Za-z0-9-]+", "_", f"{dataset}_{task.replace('*', 'all')}")


def task_option(data: OpenDataset, text: str) -> Task:
    """``--task``, parsed and checked against the dataset; the error names the option."""
    try:
        return data.task(text)
    except DataError as exc:
        raise DataError(f"--task: {exc}") from None


def export_split(data: OpenDataset, task: Task, few_shot: int, seed: int) -> dict[str, list[str]]:
    """ntbench's subjects of ``task``: the cells' training draw, validation and test ids."""
    return {
        "train": data.train_ids(task, few_shot, seed),
        "val": data.task_ids(task, "val"),
        "test": data.task_ids(task, "test"),
    }


def _write_case(
    subject: Subject, task: Task, regions: dict, label_values: frozenset[int], images: Path, labels: Path
) -> None:
    """The task's modality as ``<id>_0000.nii.gz`` and its classes as ``<id>.nii.gz``, on the image's grid."""
    from datasets.slices import map_labels  # imports torch: not needed for --help

    arrays, raw, _ = dio.load_subject(subject, [task.modality], label_values)
    ref = nib.load(str(dio.split_channel(subject.images[task.modality])[0]))
    affine = ref.affine
    image = nib.Nifti1Image(arrays[task.modality].astype(np.float32), affine)
    label = nib.Nifti1Image(map_labels(raw, task, regions), affine)
    for img in (image, label):
        img.header.set_zooms(ref.header.get_zooms()[:3])
        img.header.set_xyzt_units("mm")
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
    nib.save(image, str(images / f"{subject.id}_0000{FILE_ENDING}"))
    nib.save(label, str(labels / f"{subject.id}{FILE_ENDING}"))


def export(data: OpenDataset, task: Task, split: dict[str, list[str]], folder: Path, description: str) -> Path:
    """Write the raw dataset to ``folder`` (absent or complete afterwards); returns ``folder``."""
    subjects = {s.id: s for s in data.adapter.task_subjects(task)}
    adapter = data.adapter
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        for part in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (tmp / part).mkdir(parents=True)
        for sid in split["train"] + split["val"]:
            _write_case(subjects[sid], task, adapter.regions, adapter.label_values, tmp / "imagesTr", tmp / "labelsTr")
        for sid in split["test"]:
            _write_case(subjects[sid], task, adapter.regions, adapter.label_values, tmp / "imagesTs", tmp / "labelsTs")
        meta = {
            "channel_names": {"0": task.modality},
            "labels": {"background": 0, **{region: i for i, region in enumerate(task.regions, start=1)}},
            "numTraining": len(split["train"]) + len(split["val"]),
            "file_ending": FILE_ENDING,
            "name": folder.name,
            "description": description,
        }
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
        # Fold 0 only: nnU-Net reads splits_final.json from the raw folder into nnUNet_preprocessed
        # when planning (ExperimentPlanner.__init__), and trains fold 0 on exactly these lists.
        splits = [{"train": split["train"], "val": split["val"]}]
        (tmp / "splits_final.json").write_text(json.dumps(splits, indent=2) + "\n")
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m benchmarks.interop.export_nnunet", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, help="dataset adapter, e.g. phantom, fets2021")
    p.add_argument("--task", required=True, help="task, e.g. 01-t2-WT")
    p.add_argument("--data-root", type=Path, help="dataset folder (the embedded phantom needs none)")
    p.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE", help="adapter option")
    p.add_argument("--few-shot", type=int, default=0, metavar="K", help="training subjects of the cells (0 = all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the few-shot draw (the cells' seed)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the subject split (default: 0, as suites)")
    add_split_fractions(p, "0.6 0.2 0.2, as suites")
    p.add_argument("--id", type=int, required=True, help="nnU-Net dataset id, 1..999")
    p.add_argument("--out", type=Path, required=True, help="nnU-Net raw folder (nnUNet_raw) to write into")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help=f"cache (default: {DEFAULT_CACHE})")
    p.add_argument("--size", type=int, default=64, help="slice size of the ntbench cache used to open the data")
    return p


def main(argv: list[str] | None = None) -> int:
    configure_openmp()  # the runner's start-up, before torch loads (benchmarks.threads)
    args = build_parser().parse_args(argv)
    from benchmarks.data import open_dataset
    from datasets.core.registry import UnknownNameError

    try:
        if not 1 <= args.id <= 999:
            raise DataError(f"--id {args.id}: nnU-Net dataset ids are 1..999")
        check_minimums(args, {"few_shot": 0})
        check_folder("--out", args.out)
        options = {}
        for spec in args.dataset_option:
            key, sep, value = spec.partition("=")
            if not sep or not key.strip():
                raise DataError(f"--dataset-option {spec!r}: expected KEY=VALUE")
            import yaml

            options[key.strip()] = yaml.safe_load(value)
        fractions = args.split_fractions or DEFAULT_SPLIT_FRACTIONS
        data = open_dataset(
            args.dataset, args.data_root, options, args.cache_dir, args.size, args.split_seed, fractions
        )
        task = task_option(data, args.task)
        split = export_split(data, task, args.few_shot, args.seed)
        if not split["val"] or not split["test"]:
            raise DataError(f"--task {task}: no {'validation' if not split['val'] else 'test'} subjects")
        folder = args.out / f"Dataset{args.id:03d}_{dataset_name(args.dataset, str(task))}"
        clash = sorted(args.out.glob(f"Dataset{args.id:03d}_*")) if args.out.is_dir() else []
        if clash:
            raise DataError(f"--id {args.id}: {clash[0]} exists (remove it or choose another id)")
    except (DataError, UnknownNameError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    description = (
        f"ntbench {args.dataset} task {task}, split_seed {args.split_seed}, split_fractions "
        f"{fractions_text(fractions)}, few-shot {args.few_shot} seed {args.seed}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    export(data, task, split, folder, description)
    n = {k: len(v) for k, v in split.items()}
    print(f"{folder}: {n['train']} train + {n['val']} val in imagesTr (fold 0), {n['test']} test in imagesTs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
