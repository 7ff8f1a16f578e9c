"""The feature sample's cap: doubling PER_CLASS moves no feature-based score by more than a measured tolerance.

Fixture: 6 phantom subjects of 64x64x32 (the default suite's slice size), a U-Net trained 60 steps on 01-t2-WT,
scored on the 106 01-t1-WT slices of the 4 training subjects (426,794 background and 7,382 tumour pixels).
Measured there (max over seeds 0-2 of |score(8000) - score(4000)| / |score(4000)|): gbc 4.8%, hscore 4.4%,
hscore-shrinkage 4.6%, logme 1.2%, transrate 1.2%; the tolerances below add a quarter. On the default suite's two
transfers (source models trained 600 steps, 79 and 84 target slices) the same doubling moved them by at most 2.1%,
3.5%, 3.7%, 0.5% and 3.6% (docs/design.md §Transferability estimators).
"""

from __future__ import annotations

import pytest
import torch

from methods.estimators import PER_CLASS, estimate

TOLERANCE = {"gbc": 0.06, "hscore": 0.055, "hscore-shrinkage": 0.058, "logme": 0.015, "transrate": 0.015}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from benchmarks.backbones import build_backbone
    from benchmarks.config import Budget
    from benchmarks.data import open_dataset
    from benchmarks.train import seed_all, train
    from datasets.phantom import generate_phantom
    from datasets.slices import SliceDataset

    base = tmp_path_factory.mktemp("sampling")
    root = generate_phantom(base / "phantom", n_subjects=6, n_groups=1, shape=(64, 64, 32))
    data = open_dataset("phantom", root, {}, base / "cache", 64, 0)
    source, target = data.task("01-t2-WT"), data.task("01-t1-WT")
    ids = data.task_ids(source, "train")
    seed_all(0, "x")
    model = build_backbone("unet", 1, 2)
    train(model, SliceDataset(data.slices(source, ids), augment=True), 60, Budget(), torch.device("cpu"), seed=0)
    return model.eval(), data.slices(target, ids)


def test_doubling_the_sample_moves_scores_within_tolerance(trained):
    model, slices = trained
    assert PER_CLASS == 4000 and len(slices) == 106
    for seed in range(3):
        base = estimate(model, slices, sorted(TOLERANCE), seed=seed)
        doubled = estimate(model, slices, sorted(TOLERANCE), per_class=2 * PER_CLASS, seed=seed)
        for name, tolerance in TOLERANCE.items():
            assert abs(doubled[name] - base[name]) <= tolerance * abs(base[name]), (name, seed, base, doubled)
