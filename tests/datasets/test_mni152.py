"""mni152: synthetic subjects from nilearn's bundled ICBM152 template, in the iSeg-2019 layout."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest

from datasets.base import DATASETS, DataError
from datasets.io import load_subject
from datasets.mni152 import MNI152, generate_mni152


def test_default_root_layout_and_tissue_contrast(mni152_cache: Path) -> None:
    root = MNI152.default_root(mni152_cache)
    assert root == mni152_cache / "mni152-v1-s0" and DATASETS.get("mni152") is MNI152
    adapter = MNI152(root)
    assert len(adapter.labelled_subjects()) == 24 and adapter.modalities() == ["t1", "t2"]
    assert "synthetic" in (MNI152.__doc__ or "").lower()
    images, label, spacing = load_subject(adapter.subjects()[0], ["t1", "t2"], adapter.label_values)
    assert label.shape == (64, 64, 48) and spacing == (2.5, 3.0, 3.0)
    assert set(np.unique(label)) == {0, 10, 150, 250}
    assert np.array_equal(label > 0, images["t1"] > 0) and np.array_equal(label > 0, images["t2"] > 0)
    t1 = [images["t1"][label == v].mean() for v in (10, 150, 250)]
    t2 = [images["t2"][label == v].mean() for v in (10, 150, 250)]
    assert t1[0] < t1[1] < t1[2] and t2[0] > t2[1] > t2[2]  # CSF < GM < WM on T1, reversed on T2


def test_existing_root_is_reused_not_rewritten(mni152_cache: Path) -> None:
    first = mni152_cache / "mni152-v1-s0" / "iSeg-2019-Training" / "subject-1-T1.img"
    before = first.stat().st_mtime_ns
    MNI152.default_root(mni152_cache)
    assert first.stat().st_mtime_ns == before


def test_offline_deterministic_and_independent_of_n(
    mni152_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: object) -> None:
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setenv("NILEARN_DATA", str(tmp_path / "nilearn_data"))
    small = generate_mni152(tmp_path / "small", n_subjects=2)
    assert not (tmp_path / "nilearn_data").exists()  # the template is read from the package, never fetched
    for name in ("subject-2-T1.img", "subject-2-T2.img", "subject-2-label.img", "subject-2-label.hdr"):
        full = mni152_cache / "mni152-v1-s0" / "iSeg-2019-Training" / name
        assert (small / "iSeg-2019-Training" / name).read_bytes() == full.read_bytes()
    assert json.loads((small / "mni152.json").read_text())["n_subjects"] == 2


def test_foreign_or_different_root_is_refused(tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    with pytest.raises(DataError, match="not a generated mni152 set"):
        generate_mni152(tmp_path / "other")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "mni152.json").write_text(json.dumps({"version": 0}))
    with pytest.raises(DataError, match="generated with"):
        generate_mni152(tmp_path / "old")
    with pytest.raises(DataError, match="n_subjects >= 1"):
        generate_mni152(tmp_path / "new", n_subjects=0)
