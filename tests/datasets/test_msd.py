"""MSD / nnU-Net raw folders: dataset.json versions, channel files, 4D files, malformed metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from layouts import make_msd, volumes

from datasets import io as dio
from datasets.base import DataError
from datasets.msd import MSD
from datasets.slices import preprocess_subjects


def test_v2_channels_and_region_lists(tmp_path: Path) -> None:
    adapter = MSD(make_msd(tmp_path, "v2"))
    assert adapter.modalities() == ["adc", "t2"]
    assert adapter.regions == {"PZ": {1}, "TZ": {2}, "gland": {1, 2}} and adapter.label_values == {0, 1, 2}
    assert [s.id for s in adapter.subjects()] == [f"case_{i:03d}" for i in range(6)]  # ._ debris ignored
    assert adapter.subjects()[0].images["adc"].name == "case_000_0001.nii.gz"
    assert adapter.parse_task("adc-gland").regions == ("gland",) and adapter.groups() == [""]


def test_v1_names_made_task_safe(tmp_path: Path) -> None:
    adapter = MSD(make_msd(tmp_path, "v1"))
    assert adapter.modalities() == ["flair", "t1w"]
    assert list(adapter.regions) == ["edema", "non_enhancing_tumor", "enhancing_tumour"]
    assert adapter.label_values == {0, 1, 2, 3}
    assert str(adapter.parse_task("flair-edema+non_enhancing_tumor")) == "flair-edema+non_enhancing_tumor"


def test_root_one_level_up(tmp_path: Path) -> None:
    make_msd(tmp_path / "Task01_BrainTumour", "v1", n=2)
    assert MSD(tmp_path).root == tmp_path / "Task01_BrainTumour"
    make_msd(tmp_path / "Task05_Prostate", "v2", n=2)
    with pytest.raises(DataError, match="several"):
        MSD(tmp_path)


def test_4d_file_split_into_channels(tmp_path: Path) -> None:
    adapter = MSD(make_msd(tmp_path / "d", "v1", four_d=True, n=3))
    subject = adapter.subjects()[1]
    images, label, _ = dio.load_subject(subject, adapter.modalities(), adapter.label_values)
    expected, _ = volumes(1, (0, 1, 2, 3), 2)
    assert np.allclose(images["flair"], expected[0]) and np.allclose(images["t1w"], expected[1])
    cached = preprocess_subjects(adapter, adapter.labelled_subjects(), tmp_path / "c", (24, 24))
    assert len(cached) == 3


def test_4d_file_with_too_few_channels_is_named(tmp_path: Path) -> None:
    root = make_msd(tmp_path / "d", "v1", four_d=True, n=3)
    meta = json.loads((root / "dataset.json").read_text())
    meta["modality"]["2"] = "T2w"
    (root / "dataset.json").write_text(json.dumps(meta))
    adapter = MSD(root)
    result = preprocess_subjects(adapter, adapter.labelled_subjects(), tmp_path / "c", (24, 24), skip_bad=True)
    assert len(result.bad) == 3 and all("case_" in r and "channel 2" in r for r in result.bad.values())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"labels": {"0": "background"}}, "declares no foreground label"),
        ({"labels": {"background": 0, "tumour": -1}}, "label value -1 is not a non-negative integer"),
        ({"labels": {"background": 0, "a b": 1, "a-b": 2}}, "repeats the region name 'a_b'"),
        ({"channel_names": {"0": "T2", "2": "ADC"}}, "keys must be 0..1"),
        ({"channel_names": {"0": "+++"}}, "channel name '\\+\\+\\+' has no letter or digit"),
        ({"file_ending": ".png"}, "file_ending '.png' is not supported"),
    ],
)
def test_malformed_dataset_json(change: dict, message: str, tmp_path: Path) -> None:
    root = make_msd(tmp_path, "v2", n=1)
    meta = {**json.loads((root / "dataset.json").read_text()), **change}
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=message) as err:
        MSD(root)
    assert "dataset.json" in str(err.value)


def test_unreadable_json_and_missing_labels(tmp_path: Path) -> None:
    root = make_msd(tmp_path, "v2", n=1)
    (root / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match="dataset.json: unreadable"):
        MSD(root)
    root = make_msd(tmp_path / "b", "v2", n=1)
    (root / "labelsTr" / "case_000.nii.gz").unlink()
    with pytest.raises(DataError, match="labelsTr: no label files"):
        MSD(root)


def test_repeated_channel_names_get_their_index(tmp_path: Path) -> None:
    root = make_msd(tmp_path, "v2", n=1)
    meta = json.loads((root / "dataset.json").read_text())
    meta["channel_names"] = {"0": "MRI", "1": "MRI"}
    (root / "dataset.json").write_text(json.dumps(meta))
    assert MSD(root).modalities() == ["mri_0", "mri_1"]
