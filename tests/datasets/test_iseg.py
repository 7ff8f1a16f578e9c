"""iSeg-2019: Analyze pairs, where the root may point, unlabelled subjects and half pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from layouts import make_iseg

from datasets.base import DataError
from datasets.io import load_subject
from datasets.iseg import ISeg2019
from datasets.slices import preprocess_subjects


def test_training_folder_or_its_parent(tmp_path: Path) -> None:
    root = make_iseg(tmp_path, n=3, validation=2)
    parent, training = ISeg2019(root), ISeg2019(root / "iSeg-2019-Training")
    assert [s.id for s in parent.subjects()] == [f"subject-{i}" for i in range(1, 6)]
    assert (
        [s.id for s in parent.labelled_subjects()]
        == [s.id for s in training.subjects()]
        == ["subject-1", "subject-2", "subject-3"]
    )
    assert parent.modalities() == ["t1", "t2"] and parent.groups() == [""]
    assert str(parent.parse_task("t1-CSF")) == "t1-CSF" and parent.parse_task("t2-CSF+GM+WM").num_classes == 4
    with pytest.raises(DataError, match="unknown modality 'T1'"):
        parent.parse_task("T1-CSF")


def test_pairs_read_with_singleton_axis_squeezed(tmp_path: Path) -> None:
    adapter = ISeg2019(make_iseg(tmp_path, n=1))
    subject = adapter.subjects()[0]
    images, label, spacing = load_subject(subject, adapter.modalities(), adapter.label_values)
    assert images["t1"].shape == label.shape == (24, 24, 12) and spacing == (1.0, 1.0, 1.0)
    assert set(np.unique(label)) == {0, 10, 150, 250}


def test_missing_label_pair_is_unlabelled_but_half_pair_is_bad(tmp_path: Path) -> None:
    folder = make_iseg(tmp_path / "d", n=4) / "iSeg-2019-Training"
    for ext in ("hdr", "img"):
        (folder / f"subject-1-label.{ext}").unlink()
    (folder / "subject-2-label.img").unlink()
    adapter = ISeg2019(tmp_path / "d")
    assert [s.id for s in adapter.labelled_subjects()] == ["subject-2", "subject-3", "subject-4"]
    result = preprocess_subjects(adapter, adapter.labelled_subjects(), tmp_path / "c", (24, 24), skip_bad=True)
    assert result.bad == {"subject-2": f"{folder / 'subject-2-label.img'}: file not found"}


def test_missing_header_is_named(tmp_path: Path) -> None:
    folder = make_iseg(tmp_path / "d", n=3) / "iSeg-2019-Training"
    (folder / "subject-3-T2.hdr").unlink()
    adapter = ISeg2019(tmp_path / "d")
    result = preprocess_subjects(adapter, adapter.labelled_subjects(), tmp_path / "c", (24, 24), skip_bad=True)
    assert result.bad == {"subject-3": f"{folder / 'subject-3-T2.hdr'}: file not found"}


def test_same_subject_in_two_folders_is_refused(tmp_path: Path) -> None:
    root = make_iseg(tmp_path, n=2)
    (root / "iSeg-2019-Validation").mkdir()
    for ext in ("hdr", "img"):
        (root / "iSeg-2019-Validation" / f"subject-2-T1.{ext}").write_bytes(
            (root / "iSeg-2019-Training" / f"subject-2-T1.{ext}").read_bytes()
        )
    with pytest.raises(DataError, match="subject subject-2 is also in"):
        ISeg2019(root)
