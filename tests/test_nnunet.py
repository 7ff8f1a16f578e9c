"""nnU-Net interop against nnU-Net's own code: export, the ``nnunet`` backbone, checkpoints as sources, import.

The checkpoint is made by nnU-Net: its fingerprint extractor and planner plan the exported phantom task,
``nnUNetTrainer`` builds the network from those plans and writes ``checkpoint_final.pth`` with its own
``save_checkpoint``. ``NTBENCH_NNUNET_TRAIN=1`` also runs nnU-Net's preprocessing and a real (one epoch,
two iterations) ``nnUNetTrainer.run_training`` on CPU and transfers from that checkpoint (slow).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2", reason="needs the nnunet extra")

from benchmarks.backbones import build_backbone  # noqa: E402
from benchmarks.cli import main as run_main  # noqa: E402
from benchmarks.data import open_dataset  # noqa: E402
from benchmarks.interop.export_nnunet import main as export_main  # noqa: E402
from datasets.phantom import generate_phantom  # noqa: E402
from methods.model import CheckpointError  # noqa: E402

TASK = "t2-WT+ET"  # source task: 3 classes
TARGET = "t1-WT"  # target task: 2 classes, so transfers re-initialise the head
SIZE = 32
DATASET = "Dataset001_phantom_all-t2-WT_ET"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A phantom with 2 groups of 5 (so every task has train/val/test subjects) and its export."""
    root = tmp_path_factory.mktemp("nnunet")
    data_root = generate_phantom(root / "phantom", n_subjects=10, n_groups=2, shape=(32, 32, 16), seed=0)
    cache = root / "cache"
    raw = root / "nnUNet_raw"
    assert export_main(_export_args(data_root, cache, raw)) == 0
    data = open_dataset("phantom", data_root, {}, cache, SIZE, 0)
    return {"root": root, "data_root": data_root, "cache": cache, "raw": raw, "data": data}


def _export_args(data_root: Path, cache: Path, out: Path, *extra: str) -> list[str]:
    common = ["--dataset", "phantom", "--data-root", str(data_root), "--cache-dir", str(cache), "--size", str(SIZE)]
    return [*common, "--task", TASK, "--id", "1", "--out", str(out), *extra]


@pytest.fixture
def nnunet_env(world: dict, monkeypatch: pytest.MonkeyPatch) -> dict:
    """nnU-Net's folders inside the test's tmp folder; one process for its data-augmentation workers."""
    paths = {name: world["root"] / name for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for name, path in paths.items():
        monkeypatch.setenv(name, str(path))
    monkeypatch.setenv("nnUNet_n_proc_DA", "1")  # planning calls torch.set_num_threads with it
    monkeypatch.setenv("nnUNet_compile", "false")
    return paths


@pytest.fixture(scope="module")
def planned(world: dict) -> Path:
    """nnU-Net's fingerprint and plans of the export (its preprocessed folder)."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments

    with pytest.MonkeyPatch.context() as mp:
        for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            mp.setenv(name, str(world["root"] / name))
        mp.setenv("nnUNet_n_proc_DA", "1")
        extract_fingerprints([1], num_processes=1, check_dataset_integrity=False, verbose=False)
        plan_experiments([1])
    return world["root"] / "nnUNet_preprocessed" / DATASET


def _trainer(world: dict):
    from nnunetv2.run.run_training import get_trainer_from_args

    return get_trainer_from_args("1", "2d", 0, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def checkpoint(world: dict, planned: Path) -> Path:
    """``checkpoint_final.pth`` written by ``nnUNetTrainer.save_checkpoint`` for the plans' 2D network."""
    from batchgenerators.utilities.file_and_folder_operations import save_json

    with pytest.MonkeyPatch.context() as mp:
        for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            mp.setenv(name, str(world["root"] / name))
        mp.setenv("nnUNet_n_proc_DA", "0")
        mp.setenv("nnUNet_compile", "false")
        trainer = _trainer(world)
        # initialize() without the data loaders (no preprocessed data here): the network from the plans
        # as the trainer builds it, and its optimiser, whose state the checkpoint carries
        trainer.network = trainer.build_network_architecture(
            trainer.plans_manager,
            trainer.configuration_manager,
            len(trainer.dataset_json["channel_names"]),
            trainer.label_manager.num_segmentation_heads,
            trainer.enable_deep_supervision,
        )
        trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()
        with torch.no_grad():  # a trained-looking network: weights that differ from any fresh init
            for p in trainer.network.parameters():
                p.add_(0.01 * torch.randn_like(p))
        # as nnUNetTrainer.on_train_start and on_train_end do
        save_json(trainer.plans_manager.plans, os.path.join(trainer.output_folder_base, "plans.json"), sort_keys=False)
        save_json(trainer.dataset_json, os.path.join(trainer.output_folder_base, "dataset.json"), sort_keys=False)
        path = Path(trainer.output_folder) / "checkpoint_final.pth"
        trainer.save_checkpoint(str(path))
    return path


# --- export -------------------------------------------------------------------------------------------


def test_export_passes_nnunet_integrity_check(world: dict) -> None:
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(str(world["raw"] / DATASET), num_processes=1)  # raises on any problem


def test_export_split_is_ntbench_split(world: dict) -> None:
    folder, data = world["raw"] / DATASET, world["data"]
    task = data.task(TASK)
    fold0 = json.loads((folder / "splits_final.json").read_text())[0]
    assert fold0 == {"train": data.task_ids(task, "train"), "val": data.task_ids(task, "val")}
    test = data.task_ids(task, "test")
    ids = lambda part: sorted(p.name.split("_0000")[0] for p in (folder / part).glob("*_0000.nii.gz"))  # noqa: E731
    assert ids("imagesTs") == test and ids("imagesTr") == sorted(fold0["train"] + fold0["val"])
    assert not set(test) & set(fold0["train"] + fold0["val"])
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "WT": 1, "ET": 2} and meta["numTraining"] == len(ids("imagesTr"))
    assert meta["channel_names"] == {"0": "t2"} and meta["file_ending"] == ".nii.gz"


def test_export_keeps_voxels_and_grid_and_maps_labels(world: dict) -> None:
    from datasets.slices import map_labels

    data, sid = world["data"], world["data"].task_ids(world["data"].task(TASK), "test")[0]
    subject = next(s for s in data.adapter.subjects() if s.id == sid)
    src, out = (
        nib.load(str(subject.images["t2"])),
        nib.load(str(world["raw"] / DATASET / "imagesTs" / f"{sid}_0000.nii.gz")),
    )
    np.testing.assert_array_equal(np.asarray(out.dataobj), np.asarray(src.dataobj, dtype=np.float32))
    np.testing.assert_allclose(out.affine, src.affine)
    label = np.asarray(nib.load(str(world["raw"] / DATASET / "labelsTs" / f"{sid}.nii.gz")).dataobj)
    raw = np.asarray(nib.load(str(subject.label)).dataobj)
    np.testing.assert_array_equal(label, map_labels(raw, data.task(TASK), data.adapter.regions))
    assert set(np.unique(label)) <= {0, 1, 2}


def test_export_few_shot_fold0_is_the_cells_draw(world: dict, tmp_path: Path) -> None:
    assert (
        export_main(_export_args(world["data_root"], world["cache"], tmp_path, "--few-shot", "2", "--seed", "3")) == 0
    )
    fold0 = json.loads((tmp_path / DATASET / "splits_final.json").read_text())[0]
    task = world["data"].task(TASK)
    assert fold0["train"] == world["data"].train_ids(task, 2, 3) and len(fold0["train"]) == 2
    assert len(list((tmp_path / DATASET / "imagesTr").iterdir())) == 2 + len(fold0["val"])


def test_export_split_fractions_move_subjects_to_val(world: dict, tmp_path: Path) -> None:
    """2 groups of 5: 1 val subject each at the default fractions, 2 at 0.4 0.4 0.2 (fold 0 = the runner's split)."""
    args = _export_args(world["data_root"], world["cache"], tmp_path, "--split-fractions", "0.4", "0.4", "0.2")
    assert export_main(args) == 0
    fold0 = json.loads((tmp_path / DATASET / "splits_final.json").read_text())[0]
    data = open_dataset("phantom", world["data_root"], {}, world["cache"], SIZE, 0, (0.4, 0.4, 0.2))
    task = data.task(TASK)
    assert fold0 == {"train": data.task_ids(task, "train"), "val": data.task_ids(task, "val")}
    default_val = json.loads((world["raw"] / DATASET / "splits_final.json").read_text())[0]["val"]
    assert len(fold0["val"]) == 2 * len(default_val) == 4


@pytest.mark.parametrize(
    ("extra", "option"),
    [
        (["--id", "1000"], "--id"),
        (["--few-shot", "99"], "--few-shot"),
        (["--few-shot", "-1"], "--few-shot -1: must be >= 0"),
        (["--out", __file__], "exists and is not a folder"),
        (["--task", "t2-XX"], "--task"),
        (["--id", "x"], "--id"),
        (["--dataset", "nope"], "dataset"),
        (["--split-fractions", "0.5", "0.5", "0.5"], "--split-fractions"),
    ],
)
def test_export_bad_input_one_line_exit_2_nothing_written(
    world: dict, tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], option: str
) -> None:
    out = tmp_path / "raw"
    try:
        status = export_main([*_export_args(world["data_root"], world["cache"], out), *extra])
    except SystemExit as exc:  # argparse: a value of the wrong type
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert option in err and len(err.splitlines()) == 1 and not out.exists()


# --- the nnunet backbone ------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "stages"), [(32, 4), (64, 5), (48, 4)])
def test_backbone_follows_nnunet_default_2d_plan(size: int, stages: int) -> None:
    model = build_backbone("nnunet", 1, 3, size=size)
    body = model.body.net
    assert len(model.encoder_stages) == stages == len(body.encoder.stages)
    widths = [stage[-1].output_channels for stage in body.encoder.stages]
    assert widths == [min(512, 32 * 2**i) for i in range(stages)]
    assert isinstance(body.encoder.stages[0][0].convs[0].norm, torch.nn.InstanceNorm2d)
    assert model(torch.randn(2, 1, size, size)).shape == (2, 3, size, size)


def test_backbone_pads_sizes_off_the_stride_like_nnunet() -> None:
    model = build_backbone("nnunet", 1, 2, size=32).eval()  # total stride 8
    x = torch.randn(1, 1, 30, 30)
    with torch.no_grad():
        padded = model.head(model.body.net(torch.nn.functional.pad(x, (1, 1, 1, 1))))[..., 1:-1, 1:-1]
        torch.testing.assert_close(model(x), padded)


# --- nnU-Net checkpoints as source models ------------------------------------------------------------


def test_checkpoint_rebuilds_nnunets_network_exactly(checkpoint: Path) -> None:
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    plans = json.loads((checkpoint.parent.parent / "plans.json").read_text())
    arch = plans["configurations"]["2d"]["architecture"]
    net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"], 1, 3)
    net.decoder.deep_supervision = False
    net.load_state_dict(torch.load(checkpoint, weights_only=False)["network_weights"])  # trusted: made here
    model = build_backbone("nnunet", 1, None, checkpoint)
    x = torch.randn(2, 1, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), net.eval()(x))
    assert build_backbone("nnunet", 1, 2, checkpoint).num_classes == 2  # other class count: fresh head


def test_checkpoint_is_the_source_model_not_pretrained(world: dict, checkpoint: Path, tmp_path: Path) -> None:
    from benchmarks.config import Budget, Cell
    from benchmarks.sources import source_model

    budget = Budget(size=SIZE)
    cell = Cell("s", "phantom", TASK, TARGET, "finetune", "nnunet", 0, 2, budget=budget, checkpoint=str(checkpoint))
    model, path = source_model(cell, world["data"], tmp_path, torch.device("cpu"))
    assert path == checkpoint and not (tmp_path / "sources").exists() and model.num_classes == 3
    weights = torch.load(checkpoint, weights_only=False)["network_weights"]  # trusted: made here
    for key, value in weights.items():
        if not key.startswith("decoder.seg_layers."):
            torch.testing.assert_close(model.state_dict()[f"body.net.{key}"], value)
    last = max(int(k.split(".")[2]) for k in weights if k.startswith("decoder.seg_layers."))
    torch.testing.assert_close(model.head.weight, weights[f"decoder.seg_layers.{last}.weight"])


@pytest.mark.slow
def test_transfer_from_nnunet_checkpoint_end_to_end(world: dict, checkpoint: Path, tmp_path: Path) -> None:
    import pandas as pd

    args = ["--suite", "phantom", "--data-root", str(world["data_root"]), "--source", TASK, "--target", TARGET]
    args += ["--backbone", "nnunet", "--checkpoint", str(checkpoint), "--steps", "2", "--few-shot", "2"]
    args += ["--method", "finetune", "scratch", "--out", str(tmp_path / "out"), "--cache-dir", str(world["cache"])]
    assert run_main(args) == 0
    rows = pd.concat(pd.read_parquet(p) for p in (tmp_path / "out" / "cells").glob("*.parquet"))
    assert set(rows["status"]) == {"ok"} and set(rows["method"]) == {"finetune", "scratch"}
    assert (rows["source_steps"] == 0).all()  # the checkpoint is the source: nothing pretrained


def test_bad_checkpoint_names_the_missing_key(checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "Trainer__Plans__2d"
    shutil.copytree(checkpoint.parent.parent, folder)
    bad = folder / checkpoint.parent.name / checkpoint.name
    plans = json.loads((folder / "plans.json").read_text())
    del plans["configurations"]["2d"]["architecture"]
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(CheckpointError, match=r"missing key configurations\.2d\.architecture \(plans\.json\)"):
        build_backbone("nnunet", 1, 2, bad)
    with pytest.raises(CheckpointError, match="needs --backbone nnunet"):
        build_backbone("unet", 1, 2, checkpoint)
    plans["configurations"]["2d"]["architecture"] = {
        "network_class_name": "subprocess.Popen",  # plans are data: never a class outside nnU-Net's and torch.nn
        "arch_kwargs": {},
        "_kw_requires_import": [],
    }
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(CheckpointError, match="'subprocess.Popen' is not allowed"):
        build_backbone("nnunet", 1, 2, bad)


def test_checkpoint_with_foreign_pickled_types_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "Trainer__Plans__2d"
    shutil.copytree(checkpoint.parent.parent, folder)
    bad = folder / checkpoint.parent.name / checkpoint.name
    state = torch.load(checkpoint, weights_only=False)
    state["init_args"]["payload"] = Path("/")  # any class outside the allowlist
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match="unreadable"):
        build_backbone("nnunet", 1, 2, bad)


def test_cli_bad_checkpoint_exit_2(world: dict, checkpoint: Path, tmp_path: Path, capsys) -> None:
    args = ["--suite", "phantom", "--data-root", str(world["data_root"]), "--source", TASK, "--target", TARGET]
    args += ["--backbone", "unet", "--checkpoint", str(checkpoint), "--steps", "2", "--method", "finetune"]
    assert run_main([*args, "--out", str(tmp_path / "out"), "--cache-dir", str(world["cache"])]) == 2
    err = capsys.readouterr().err.strip()
    assert "--checkpoint" in err and len(err.splitlines()) == 1
    assert not list((tmp_path / "out").glob("cells/*.parquet"))


# --- every method on the nnunet backbone --------------------------------------------------------------


def _methods() -> list[str]:
    from methods import METHODS

    return METHODS.names()


@pytest.mark.parametrize("method", _methods())
def test_every_method_two_steps_on_nnunet(world: dict, method: str, tmp_path: Path) -> None:
    from benchmarks.cell import run_cell
    from benchmarks.config import Budget, Cell
    from benchmarks.store import Store
    from methods import METHODS

    init_random = METHODS.get(method).init == "random"
    budget = Budget(source_steps=2, target_steps=2, batch_size=2, size=SIZE)
    cell = Cell("nnunet-smoke", "phantom", "" if init_random else TASK, TARGET, method, "nnunet", 0, 2, budget=budget)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        frame = run_cell(cell, world["data"], Store(tmp_path), world["cache"], torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    assert set(frame["status"]) == {"ok"}, frame["error"].iloc[0]
    assert frame["dice"].between(0, 1).all()


# --- nnU-Net's predictions in the store ---------------------------------------------------------------


def test_import_truth_as_predictions_scores_dice_1(world: dict, tmp_path: Path) -> None:
    import pandas as pd

    from benchmarks.core.schema import SCHEMA
    from benchmarks.interop.import_predictions import main as import_main

    args = ["--predictions", str(world["raw"] / DATASET / "labelsTs"), "--task", TASK, "--suite", "phantom"]
    args += ["--data-root", str(world["data_root"]), "--out", str(tmp_path), "--cache-dir", str(world["cache"])]
    assert import_main(args) == 0
    (cell,) = (tmp_path / "cells").glob("*.parquet")
    rows = pd.read_parquet(cell)
    assert set(rows["method"]) == {"nnunet"} and set(rows["status"]) == {"ok"} and set(SCHEMA) <= set(rows.columns)
    assert (rows["dice"] == 1.0).all() and (rows["hd95"] == 0.0).all()
    assert set(rows["target_task"]) == {TASK} and set(rows["source_task"]) == {""}  # joins the runner's rows
    assert len(rows) == 2 * len(world["data"].task_ids(world["data"].task(TASK), "test"))


@pytest.mark.parametrize(
    ("drop", "extra", "message"), [(True, [], "--predictions"), (False, ["--steps", "0"], "--steps 0: must be >= 1")]
)
def test_import_bad_input_exit_2_nothing_written(
    world: dict, tmp_path: Path, capsys, drop: bool, extra: list[str], message: str
) -> None:
    from benchmarks.interop.import_predictions import main as import_main

    preds = tmp_path / "preds"
    shutil.copytree(world["raw"] / DATASET / "labelsTs", preds)
    if drop:  # one subject's prediction missing
        next(preds.iterdir()).unlink()
    args = ["--predictions", str(preds), "--task", TASK, "--suite", "phantom", "--data-root", str(world["data_root"])]
    assert import_main([*args, *extra, "--out", str(tmp_path / "out"), "--cache-dir", str(world["cache"])]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not (tmp_path / "out").exists()


# --- opt-in: a real nnUNetTrainer run ----------------------------------------------------------------


@pytest.mark.skipif(os.environ.get("NTBENCH_NNUNET_TRAIN") != "1", reason="slow: set NTBENCH_NNUNET_TRAIN=1")
def test_real_nnunet_training_then_transfer(world: dict, planned: Path, nnunet_env: dict, tmp_path: Path) -> None:
    from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess

    preprocess([1], configurations=("2d",), num_processes=(1,), verbose=False)
    os.environ["nnUNet_n_proc_DA"] = "0"  # single-threaded augmentation (restored by monkeypatch)
    trainer = _trainer(world)
    trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch, trainer.num_epochs = 2, 1, 1
    trainer.run_training()
    final = Path(trainer.output_folder) / "checkpoint_final.pth"
    args = ["--suite", "phantom", "--data-root", str(world["data_root"]), "--source", TASK, "--target", TARGET]
    args += ["--backbone", "nnunet", "--checkpoint", str(final), "--steps", "2", "--few-shot", "2", "--method", "lwf"]
    assert run_main([*args, "--out", str(tmp_path / "out"), "--cache-dir", str(world["cache"])]) == 0
