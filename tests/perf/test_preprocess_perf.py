"""Preprocessing real-size subjects (240x240x155, four modalities + seg, FeTS layout) with 2 workers.

Reported in ``extra_info``: seconds per subject, and the ratio to a reference measured in the same run
(nibabel-loading the same files, single process). A counter checks that each subject is decoded once
per cold run and never on a cache hit.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

import datasets.preprocess as prep
from datasets.base import Subject
from datasets.fets import FeTS2021

SHAPE = (240, 240, 155)
N_SUBJECTS = 4
JOBS = 2
MODALITIES = ("t1", "t1ce", "t2", "flair")
LOG = "NTBENCH_TEST_DECODE_LOG"
_build = prep._build  # the real one, also in spawned workers (they import this module afresh)


def counting_build(subject: Subject, *args: object) -> str | None:
    """``_build`` that first appends the subject id to the file named by $NTBENCH_TEST_DECODE_LOG."""
    with open(os.environ[LOG], "a") as fh:
        fh.write(subject.id + "\n")
    return _build(subject, *args)


@pytest.fixture(scope="module")
def fets_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 subjects of random int16 brains (an ellipsoid) and a 0/1/2/4 seg, as BraTS/FeTS store them."""
    root = tmp_path_factory.mktemp("fets")
    grid = np.meshgrid(*(np.linspace(-1, 1, n, dtype=np.float32) for n in SHAPE), indexing="ij", sparse=True)
    rho = np.sqrt(sum(g**2 for g in grid))
    rows = []
    for i in range(N_SUBJECTS):
        rng = np.random.default_rng(i)
        sid = f"FeTS21_Training_{i + 1:03d}"
        rows.append((sid, "1"))
        (root / sid).mkdir()
        seg = np.select([rho < 0.15, rho < 0.25, rho < 0.4], [1, 4, 2], 0).astype(np.uint8)
        for modality in MODALITIES:
            image = np.where(rho < 0.85, rng.integers(50, 1000, SHAPE, dtype=np.int16), 0).astype(np.int16)
            nib.save(nib.Nifti1Image(image, np.eye(4)), str(root / sid / f"{sid}_{modality}.nii.gz"))
        nib.save(nib.Nifti1Image(seg, np.eye(4)), str(root / sid / f"{sid}_seg.nii.gz"))
    pd.DataFrame(rows, columns=["Subject_ID", "Partition_ID"]).to_csv(root / "partitioning_1.csv", index=False)
    return root


def _reference_load(subjects: list) -> float:
    """Seconds to nibabel-load every file of ``subjects`` as float32, one process."""
    start = time.perf_counter()
    for s in subjects:
        for path in [*s.images.values(), s.label]:
            np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
    return time.perf_counter() - start


def test_preprocess_real_size(
    benchmark: BenchmarkFixture, fets_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = FeTS2021(fets_root)
    subjects = adapter.labelled_subjects()
    cache, log = tmp_path / "cache", tmp_path / "decoded.log"
    monkeypatch.setenv(LOG, str(log))
    monkeypatch.setattr(prep, "_build", counting_build)

    def cold() -> None:
        for f in (cache / "subjects").glob("*.npz"):
            f.unlink()
        log.write_text("")

    def run() -> prep.PreprocessResult:
        return prep.preprocess_subjects(adapter, subjects, cache, size=(240, 240), jobs=JOBS)

    reference = min(_reference_load(subjects) for _ in range(2))
    result = benchmark.pedantic(run, setup=cold, rounds=2, iterations=1)
    assert sorted(log.read_text().split()) == sorted(s.id for s in subjects)  # each decoded once
    assert dict(prep.preprocess_subjects(adapter, subjects, cache, size=(240, 240), jobs=JOBS)) == dict(result)
    assert sorted(log.read_text().split()) == sorted(s.id for s in subjects)  # cache hit: nothing decoded again
    with np.load(result[subjects[0].id]) as data:
        assert data["img_flair"].shape[1:] == (240, 240) and data["label"].shape == data["img_t1"].shape

    seconds = benchmark.stats.stats.min
    benchmark.extra_info.update(
        subjects=N_SUBJECTS,
        jobs=JOBS,
        cpu_count=os.cpu_count(),
        seconds_per_subject=round(seconds / N_SUBJECTS, 3),
        reference_nibabel_load_seconds_per_subject=round(reference / N_SUBJECTS, 3),
        ratio_to_reference=round(seconds / reference, 2),
    )
