"""The dataset suites: every transfer and few-shot size is valid on data in the suite's layout."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from layouts import make_iseg, save_nifti, volumes

from benchmarks.cli import main
from benchmarks.data import open_dataset
from benchmarks.grid import build_cells
from benchmarks.suite import load_suite


def _make_fets(root: Path, groups: dict[str, int]) -> Path:
    """FeTS 2021 layout: partitioning_1.csv + ``<id>/<id>_{t1,t1ce,t2,flair,seg}.nii.gz``."""
    rows = []
    for group, n in groups.items():
        for _ in range(n):
            sid = f"FeTS21_Training_{len(rows) + 1:03d}"
            rows.append((sid, group))
            images, label = volumes(len(rows), (0, 2, 1, 4), 4)
            for modality, image in zip(("t1", "t1ce", "t2", "flair"), images):
                save_nifti(root / sid / f"{sid}_{modality}.nii.gz", image)
            save_nifti(root / sid / f"{sid}_seg.nii.gz", label)
    pd.DataFrame(rows, columns=["Subject_ID", "Partition_ID"]).to_csv(root / "partitioning_1.csv", index=False)
    return root


def _check(suite_name: str, root: Path | None, cache: Path) -> int:
    suite = load_suite(suite_name)
    data = open_dataset(suite.dataset, root, suite.dataset_options, cache, suite.budget.size, suite.split_seed)
    params = {m: {} for m in suite.methods}
    cells = build_cells(suite, params, data)  # validates every task and few-shot size
    return len(cells)


def test_mni152_suite(mni152_cache: Path) -> None:
    # 3 seeds x (3 transfers x 2 transfer methods + scratch on 2 distinct targets)
    assert _check("mni152", None, mni152_cache) == 3 * (3 * 2 + 2)


def test_fets2021_paper_suite(tmp_path: Path) -> None:
    root = _make_fets(tmp_path / "fets", {"1": 3, "14": 3})
    suite = load_suite("fets2021-paper")
    assert suite.budget.optimizer == "sgd" and suite.budget.schedule == "poly" and len(suite.seeds) == 5
    # 5 seeds x (5 transfers x 5 transfer methods + scratch on 5 distinct targets)
    assert _check("fets2021-paper", root, tmp_path / "cache") == 5 * (5 * 5 + 5)


def test_iseg2019_paper_suite(tmp_path: Path) -> None:
    # 5 seeds x (5 transfers x 5 transfer methods + scratch on 4 distinct targets)
    assert _check("iseg2019-paper", make_iseg(tmp_path / "iseg", n=10), tmp_path / "cache") == 5 * (5 * 5 + 4)


def test_learning_curve_suite(tmp_path: Path) -> None:
    assert load_suite("learning-curve").few_shot == [1, 2, 5, 10, 0]
    # 3 seeds x 5 sizes x (2 transfers x 2 transfer methods + scratch on 2 targets); k = 10 fits 16 subjects
    assert _check("learning-curve", None, tmp_path / "cache") == 3 * 5 * (2 * 2 + 2)


@pytest.mark.parametrize("name", ["fets2021-paper", "iseg2019-paper"])
def test_paper_suites_need_data_root(name: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--suite", name, "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c")]) == 2
    assert "give --data-root" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
