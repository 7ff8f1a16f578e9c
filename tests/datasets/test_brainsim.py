"""brainsim: tumours in real anatomy, four scanners, the negative-transfer dial and its ground-truth risk maps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from benchmarks.data import open_dataset
from datasets.base import DATASETS, DataError
from datasets.brainsim import (
    BRATS,
    CSF_CODE,
    ED,
    ED_CODE,
    ET,
    GM,
    GM_CODE,
    NCR,
    Anatomy,
    BrainSim,
    check_options,
    generate_brainsim,
    label_risk,
    lc_values,
)
from datasets.fets import FeTS2021
from datasets.io import load_subject
from datasets.slices import map_labels

SMALL = {"subjects": 3, "groups": 1, "levels": "0,0.5,1"}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder whose ``brainsim`` base holds one small generated set (3 subjects, levels 0, 50, 100 %)."""
    cache = tmp_path_factory.mktemp("brainsim-cache")
    BrainSim(BrainSim.default_root(cache), **SMALL)
    return cache


def _root(cache: Path) -> Path:
    (root,) = (cache / "brainsim").iterdir()
    return root


def test_fets_adapter_reads_the_set_and_tumours_sit_in_the_brain(small: Path) -> None:
    fets = FeTS2021(_root(small))
    assert fets.modalities() == ["flair", "t1", "t1ce", "t2"] and len(fets.labelled_subjects()) == 3
    for subject in fets.subjects():
        images, label, spacing = load_subject(subject, fets.modalities(), fets.label_values)
        assert spacing == (2.5, 3.0, 3.0) and label.shape == (64, 64, 48)
        assert set(np.unique(label)) == {0, 1, 2, 4}
        brain = images["t1"] > 0
        assert all(np.array_equal(brain, image > 0) for image in images.values()) and brain[label > 0].all()
        # Contrast orderings of the table (datasets.phantom): ET enhances on t1ce, oedema is bright on flair.
        mean = {m: {v: images[m][label == v].mean() for v in (1, 2, 4)} for m in images}
        assert mean["t1ce"][4] > mean["t1"][4] and mean["t1ce"][4] > mean["t1ce"][1]
        assert mean["flair"][2] > images["flair"][brain & (label == 0)].mean()


def test_brainsim_adapter_has_dial_regions_modalities_and_risk(small: Path) -> None:
    sim = BrainSim(_root(small))
    assert DATASETS.get("brainsim") is BrainSim
    assert sim.modalities() == sorted(["t1", "t1ce", "t2", "flair", "cc0", "cc50", "cc100"])
    assert {"NCR", "ED", "ET", "TC", "WT", "CSF", "GM", "WM", "LC0", "LC50", "LC100"} == set(sim.regions)
    subject = sim.subjects()[0]
    images, raw, _ = load_subject(subject, sim.modalities(), sim.label_values)
    seg = nib.load(str(subject.label).replace("_dial", "_seg")).get_fdata()
    for name, brats in FeTS2021.regions.items():  # the composite label holds the BraTS regions exactly
        assert np.array_equal(np.isin(raw, sorted(sim.regions[name])), np.isin(seg, sorted(brats)))
    assert np.array_equal(images["cc0"], images["flair"])  # level 0: the source contrast itself
    tc = sim.parse_task("*-t1ce-TC")
    assert sim.risk_map(subject, sim.parse_task("*-t1ce-LC50"), tc).name.endswith("_risk-lc50.nii.gz")
    assert sim.risk_map(subject, sim.parse_task("*-flair-WT"), sim.parse_task("*-cc100-WT")) is not None
    assert sim.risk_map(subject, sim.parse_task("*-t1-WT"), tc) is None  # not a dial transfer
    # Label dial: |S_c| = |T| at every level; S_0 = T; S_1 and T disjoint.
    target = np.isin(raw, sorted(sim.regions["TC"]))
    for p in (0, 50, 100):
        source = np.isin(raw, sorted(sim.regions[f"LC{p}"]))
        assert abs(int(source.sum()) - int(target.sum())) <= 1
        assert abs((target & ~source).sum() - p / 100 * target.sum()) <= 1 + 0.01 * target.sum()
        risk = nib.load(str(sim.risk_map(subject, sim.parse_task(f"*-t1ce-LC{p}"), tc))).get_fdata() > 0
        assert np.array_equal(risk, source ^ target)
    lc100 = np.isin(raw, sorted(sim.regions["LC100"]))
    assert not (lc100 & target).any() and np.isin(raw[lc100], sorted(sim.regions["CSF"])).all()
    ventricles = lc100.nonzero()  # the deepest CSF: near the brain's centre, far from its surface
    assert np.abs(np.mean(ventricles[0]) - 32) < 8


def test_label_mechanism_hand_built() -> None:
    """Four core voxels (percentiles 0, 25, 50, 75), one oedema, four CSF voxels (depth percentiles 0, 30, 60,
    100 of the core's volume), one grey-matter voxel, one outside: level 50%."""
    raw = np.array(
        [1 + 10, 1 + 10 * 26, 4 + 10 * 51, 4 + 10 * 76, ED_CODE, CSF_CODE, CSF_CODE + 30, CSF_CODE + 60]
        + [CSF_CODE + 100, GM_CODE, 0]
    )
    source = np.isin(raw, sorted(lc_values(50)))
    assert source.tolist() == [False, False, True, True, False, True, True, False, False, False, False]
    assert label_risk(raw, 50).tolist() == [True, True, False, False, False, True, True, False, False, False, False]
    assert not label_risk(raw, 0).any()
    assert label_risk(raw, 100).tolist() == [True] * 4 + [False] + [True] * 3 + [False] * 3


def test_contrast_mechanism_hand_built() -> None:
    """Five voxels: three tumour voxels at distances 0.2, 0.6, 1.2 and two grey-matter voxels, at level 50%."""
    anatomy = object.__new__(Anatomy)
    anatomy.inside = np.ones(5, dtype=bool)
    anatomy.d = np.array([0.2, 0.6, 1.2, 5.0, 6.0])
    anatomy.tumour_rank = np.array([0 / 3, 1 / 3, 2 / 3, np.inf, np.inf])
    anatomy.gm_rank = np.array([np.inf, np.inf, np.inf, 0.0, 0.5])
    anatomy.fractions = np.zeros((6, 5))
    for voxel, tissue in enumerate((NCR, ET, ED, GM, GM)):
        anatomy.fractions[tissue, voxel] = 1.0
    anatomy.means, anatomy.texture, anatomy.tumour_texture = np.array([0.4, 0.6, 0.8]), np.zeros(5), np.zeros(5)
    levels = np.array([0.1, 0.5, 0.4, 0.6, 0.9, 0.8])  # CSF GM WM NCR ED ET
    tumour, grey = anatomy.contrast_swap(50)
    assert tumour.tolist() == [True, True, False, False, False] and grey.tolist() == [False] * 3 + [True, False]
    np.testing.assert_allclose(anatomy.render(levels, False, 50), [0.1, 0.1, 0.9, 0.9, 0.5])
    np.testing.assert_allclose(anatomy.render(levels, False, 0), [0.6, 0.8, 0.9, 0.5, 0.5])
    np.testing.assert_allclose(anatomy.render(levels, False, 100), [0.1, 0.1, 0.1, 0.9, 0.9])


def test_contrast_risk_files_mark_the_swapped_tissue(small: Path) -> None:
    sim = BrainSim(_root(small))
    for subject in sim.subjects():
        images, raw, _ = load_subject(subject, ["flair", "cc0", "cc50", "cc100"], sim.label_values)
        tumour = np.isin(raw, sorted(sim.regions["WT"]))
        path = sim.risk_map(subject, sim.parse_task("*-flair-WT"), sim.parse_task("*-cc50-WT"))
        risk = nib.load(str(path)).get_fdata() > 0
        assert 0.45 < (risk & tumour).sum() / tumour.sum() < 0.55
        changed = np.abs(images["cc100"] - images["flair"]) > 0
        assert changed[tumour].mean() > 0.95  # at full conflict every tumour voxel changes contrast
        swapped = risk & tumour
        assert images["cc50"][swapped].mean() < images["flair"][swapped].mean() / 2  # bright -> CSF-dark


def test_risk_maps_load_through_the_dataset_api_aligned_with_slices(small: Path) -> None:
    data = open_dataset("brainsim", None, SMALL, small, 32, 0)
    source, target = data.task("*-t1ce-LC50"), data.task("*-t1ce-TC")
    ids = sorted(data.cached)
    slices = data.slices(target, ids)
    risk = data.risk(source, target, ids)
    source_slices = data.slices(source, ids)
    assert risk.shape == slices.labels.shape and risk.dtype == np.float32
    np.testing.assert_array_equal(risk > 0, (source_slices.labels > 0) ^ (slices.labels > 0))
    assert data.risk(data.task("*-t1-WT"), target, ids) is None


def test_deterministic_and_subject_independent_of_n(small: Path, tmp_path: Path) -> None:
    again = generate_brainsim(tmp_path / "again", subjects=4, groups=1, levels="0,0.5,1")
    for name in ("BrainSim_002_t1.nii.gz", "BrainSim_002_cc50.nii.gz", "BrainSim_002_dial.nii.gz"):
        a = nib.load(str(_root(small) / "BrainSim_002" / name)).get_fdata()
        b = nib.load(str(again / "BrainSim_002" / name)).get_fdata()
        np.testing.assert_array_equal(a, b)
    assert json.loads((again / "brainsim.json").read_text())["n_subjects"] == 4


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"levels": "0,1.5"}, "dial level 1.5 lies outside"),
        ({"levels": "-0.25"}, "dial level -0.25 lies outside"),
        ({"levels": "0.333"}, "not a whole percent"),
        ({"levels": "0,x"}, "'x' is not a number"),
        ({"subjects": "many"}, "subjects='many' is not"),
        ({"subjects": 2, "groups": 1}, "subjects=2 must lie in"),
        ({"groups": 5}, "groups=5 must lie in"),
    ],
)
def test_bad_options_are_one_line_errors(options: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        check_options(**{"subjects": 48, "groups": 4, "levels": "0,1", "seed": 0, **options})


def test_unknown_option_and_cli_exit_2_nothing_created(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown option"):
        BrainSim(tmp_path / "brainsim", conflict=0.5)
    out, cache = tmp_path / "out", tmp_path / "cache"
    cmd = [sys.executable, "-m", "benchmarks.run", "--dataset", "brainsim", "--source", "*-t1ce-LC0"]
    cmd += ["--target", "*-t1ce-TC", "--dataset-option", "levels=0,2", "--out", str(out), "--cache-dir", str(cache)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().count("\n") == 0 and "dial level 2 lies outside [0, 1]" in run.stderr
    assert not out.exists() and not (cache / "brainsim").exists()


def test_existing_set_refuses_generation_options(small: Path) -> None:
    with pytest.raises(DataError, match="takes no generation options"):
        BrainSim(_root(small), subjects=10)
    assert BRATS == {NCR: 1, ED: 2, ET: 4}
    raw = np.array([0, 1 + 10, ED_CODE, 4 + 10 * 60, CSF_CODE, GM_CODE])
    sim = BrainSim(_root(small))
    np.testing.assert_array_equal(map_labels(raw, sim.parse_task("*-t1ce-TC"), sim.regions), [0, 1, 0, 1, 0, 0])
    np.testing.assert_array_equal(map_labels(raw, sim.parse_task("*-t1-CSF+GM"), sim.regions), [0, 0, 0, 0, 1, 2])


def test_trm_oracle_gets_the_transfer_risk_and_is_refused_without_it(small: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    import torch

    from benchmarks.cell import fine_tune
    from benchmarks.config import Budget
    from benchmarks.grid import build_cells
    from benchmarks.suite import Suite
    from methods import MethodConfigError
    from methods.trm import WEIGHT_KEY

    data = open_dataset("brainsim", None, SMALL, small, 32, 0)
    budget = Budget(source_steps=2, target_steps=2, size=32)
    suite = Suite("t", "brainsim", [("*-t1ce-LC50", "*-t1ce-TC")], ["trm"], few_shot=[1], budget=budget)
    suite.dataset_options = SMALL
    oracle = {"trm": {"score": "oracle", "granularity": "pixel"}}
    (cell,) = build_cells(suite, oracle, data)
    target, _, method = fine_tune(replace(cell), data, tmp_path, torch.device("cpu"))
    ids = data.train_ids(data.task("*-t1ce-TC"), 1, 0)
    risk = data.risk(data.task("*-t1ce-LC50"), data.task("*-t1ce-TC"), ids)
    assert risk.any()
    np.testing.assert_allclose(method.run.risk_maps, risk)
    weights = method.run.train_data.maps[WEIGHT_KEY].astype(np.float64)
    assert (weights[risk > 0] > weights[risk == 0].max()).all()  # inverse weighting: the risky pixels weigh more
    suite.transfers = [("*-t1-WT", "*-t1ce-TC")]
    with pytest.raises(MethodConfigError, match="needs ground-truth risk maps, and dataset 'brainsim' has none"):
        build_cells(suite, oracle, data)


def test_a_fets_folder_is_not_taken_for_a_brainsim_cache(phantom_dir: Path) -> None:
    before = sorted(p.name for p in phantom_dir.iterdir())
    with pytest.raises(DataError, match="not a generated brainsim set"):
        BrainSim(phantom_dir)
    assert sorted(p.name for p in phantom_dir.iterdir()) == before
