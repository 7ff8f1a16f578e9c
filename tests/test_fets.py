"""FeTS 2021 reader on the phantom: nested folders, _t1gd, partitionings, layout errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import datasets  # noqa: F401  (registers the adapters)
from datasets.base import DATASETS, DataError
from datasets.fets import FeTS2021, Phantom


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_reads_phantom(phantom_dir: Path) -> None:
    adapter = DATASETS.get("fets2021")(phantom_dir)
    subjects = adapter.subjects()
    assert [s.id for s in subjects] == [f"FeTS21_Training_{i:03d}" for i in range(1, 9)]
    assert adapter.groups() == ["01", "02", "03", "04"]
    assert adapter.modalities() == ["flair", "t1", "t1ce", "t2"]
    s = subjects[0]
    assert s.group == "01" and s.spacing == (1.0, 1.0, 1.0)
    assert s.images["t1ce"] == phantom_dir / s.id / f"{s.id}_t1ce.nii.gz"
    assert s.label == phantom_dir / s.id / f"{s.id}_seg.nii.gz"
    assert adapter.regions["TC"] == {1, 4} and adapter.regions["WT"] == {1, 2, 4}
    assert adapter.label_values == {0, 1, 2, 4} and adapter.has_groups


def test_partitioning_2(phantom_dir: Path) -> None:
    adapter = FeTS2021(phantom_dir, partitioning=2)
    assert adapter.groups() == [f"{g:02d}" for g in range(1, 9)]
    with pytest.raises(DataError, match="partitioning_3.csv: not found.*partitioning_1.csv, partitioning_2.csv"):
        FeTS2021(phantom_dir, partitioning=3)
    assert FeTS2021(phantom_dir, partitioning="2").groups() == adapter.groups()  # CLI strings
    with pytest.raises(DataError, match="partitioning='x' is not an integer"):
        FeTS2021(phantom_dir, partitioning="x")
    with pytest.raises(DataError, match=r"unknown option\(s\) \['labels'\]; valid: partitioning"):
        FeTS2021(phantom_dir, labels=2021)


def test_nested_folder(phantom_dir: Path, tmp_path: Path) -> None:
    inner = _copy(phantom_dir, tmp_path / "archive" / "MICCAI_FeTS2021_TrainingData")
    adapter = FeTS2021(tmp_path / "archive")
    assert adapter.root == inner and len(adapter.subjects()) == 8


def test_t1gd_and_missing_seg(phantom_dir: Path, tmp_path: Path) -> None:
    root = _copy(phantom_dir, tmp_path / "d")
    sid = "FeTS21_Training_002"
    (root / sid / f"{sid}_t1ce.nii.gz").rename(root / sid / f"{sid}_t1gd.nii.gz")
    (root / sid / f"{sid}_seg.nii.gz").unlink()
    adapter = FeTS2021(root)
    subject = {s.id: s for s in adapter.subjects()}[sid]
    assert subject.images["t1ce"].name == f"{sid}_t1gd.nii.gz" and subject.label is None
    assert sid not in {s.id for s in adapter.labelled_subjects()} and len(adapter.labelled_subjects()) == 7


def test_layout_errors(phantom_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: expected the FeTS 2021 layout \(partitioning_1.csv"):
        FeTS2021(tmp_path / "empty")
    with pytest.raises(DataError, match="no such folder"):
        FeTS2021(tmp_path / "absent")
    for name in ("a", "b"):
        _copy(phantom_dir, tmp_path / "two" / name)
    with pytest.raises(DataError, match="several candidates"):
        FeTS2021(tmp_path / "two")
    root = _copy(phantom_dir, tmp_path / "gone")
    shutil.rmtree(root / "FeTS21_Training_003")
    with pytest.raises(DataError, match="subject FeTS21_Training_003 is listed but its folder .* is missing"):
        FeTS2021(root).subjects()
    (root / "partitioning_1.csv").write_text("ID,Site\nx,1\n")
    with pytest.raises(DataError, match="expected header Subject_ID,Partition_ID"):
        FeTS2021(root).subjects()


def test_phantom_default_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets.fets as fets

    monkeypatch.setattr(fets, "phantom_root", lambda cache_dir: Path(cache_dir) / "generated")
    assert DATASETS.get("phantom") is Phantom
    assert Phantom.default_root(tmp_path) == tmp_path / "generated"
    with pytest.raises(DataError, match="needs --data-root"):
        FeTS2021.default_root(tmp_path)
