"""BraTS 2020/2021/2023+ naming, the label-scheme option and where the root may point."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from layouts import make_brats

from datasets.base import DataError
from datasets.brats import BraTS
from datasets.slices import load_slices, preprocess_subjects


@pytest.mark.parametrize(
    ("release", "first", "et"),
    [
        ("2020", "BraTS20_Training_001", 4),
        ("2021", "BraTS2021_00001", 4),
        ("2023", "BraTS-GLI-00001-000", 3),
    ],
)
def test_naming_and_auto_label_scheme(release: str, first: str, et: int, tmp_path: Path) -> None:
    adapter = BraTS(make_brats(tmp_path, release, n=3))
    assert adapter.subjects()[0].id == first
    assert adapter.modalities() == ["flair", "t1", "t1ce", "t2"]
    assert adapter.regions["ET"] == {et} and adapter.regions["TC"] == {1, et} and adapter.regions["WT"] == {1, 2, et}
    assert adapter.label_values == {0, 1, 2, et}
    assert str(adapter.parse_task("t1ce-TC")) == "t1ce-TC" and adapter.groups() == [""]


def test_2023_files_map_to_classic_modalities(tmp_path: Path) -> None:
    subject = BraTS(make_brats(tmp_path, "2023", n=1)).subjects()[0]
    assert {m: p.name for m, p in subject.images.items()} == {
        "t1": "BraTS-GLI-00001-000-t1n.nii.gz",
        "t1ce": "BraTS-GLI-00001-000-t1c.nii.gz",
        "t2": "BraTS-GLI-00001-000-t2w.nii.gz",
        "flair": "BraTS-GLI-00001-000-t2f.nii.gz",
    }
    assert subject.label.name == "BraTS-GLI-00001-000-seg.nii.gz"


def test_2023_regions_select_the_right_voxels(tmp_path: Path) -> None:
    adapter = BraTS(make_brats(tmp_path / "d", "2023", n=3))
    cached = preprocess_subjects(adapter, adapter.labelled_subjects(), tmp_path / "c", (24, 24))
    ids = sorted(cached)
    for region, values in adapter.regions.items():
        got = load_slices(cached, ids, adapter.parse_task(f"t1-{region}"), adapter.regions).labels
        raw = np.concatenate([np.load(cached[i])["label"] for i in ids])
        assert np.array_equal(got == 1, np.isin(raw, sorted(values))) and got.any()


def test_label_option_overrides_and_is_validated(tmp_path: Path) -> None:
    root = make_brats(tmp_path, "2023", n=1)
    assert BraTS(root, labels=2021).regions["ET"] == {4}  # YAML/CLI give 2021 as an int
    assert BraTS(root, labels="2023").regions["ET"] == {3}
    with pytest.raises(DataError, match="labels='2022'; valid: 2021, 2023"):
        BraTS(root, labels="2022")


def test_2023_data_read_as_2021_rejects_label_3(tmp_path: Path) -> None:
    adapter = BraTS(make_brats(tmp_path / "d", "2023", n=3), labels=2021)
    result = preprocess_subjects(adapter, adapter.labelled_subjects(), tmp_path / "c", (24, 24), skip_bad=True)
    assert len(result.bad) == 3 and all("label values [3] outside [0, 1, 2, 4]" in r for r in result.bad.values())


def test_mixed_naming_needs_the_option(tmp_path: Path) -> None:
    make_brats(tmp_path, "2021", n=1)
    make_brats(tmp_path, "2023", n=1)
    with pytest.raises(DataError, match="mixes 2020/2021 and 2023"):
        BraTS(tmp_path)
    assert len(BraTS(tmp_path, labels=2023).subjects()) == 2


def test_root_may_be_one_level_up_but_not_ambiguous(tmp_path: Path) -> None:
    make_brats(tmp_path / "MICCAI_BraTS2020_TrainingData", "2020", n=2)
    (tmp_path / "MICCAI_BraTS2020_TrainingData" / "name_mapping.csv").write_text("x\n")
    adapter = BraTS(tmp_path)
    assert adapter.root == tmp_path / "MICCAI_BraTS2020_TrainingData" and len(adapter.subjects()) == 2
    make_brats(tmp_path / "BraTS2021_Training_Data", "2021", n=1)
    with pytest.raises(DataError, match="several BraTS folders"):
        BraTS(tmp_path)


def test_unlabelled_and_nii_subjects(tmp_path: Path) -> None:
    root = make_brats(tmp_path, "2021", n=2, unlabelled=1)
    seg = root / "BraTS2021_00001" / "BraTS2021_00001_seg.nii.gz"
    nib.save(nib.load(seg), seg.with_name("BraTS2021_00001_seg.nii"))  # uncompressed files are accepted too
    seg.unlink()
    adapter = BraTS(root)
    assert [s.id for s in adapter.labelled_subjects()] == ["BraTS2021_00001", "BraTS2021_00002"]
    assert adapter.labelled_subjects()[0].label.name == "BraTS2021_00001_seg.nii"
    assert adapter.subjects()[2].label is None
