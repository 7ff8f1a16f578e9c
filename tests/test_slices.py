"""Slice cache: preprocessing, cache keys, bad subjects, label mapping, re-assembly, SliceDataset."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from datasets import io as dio
from datasets.base import DataError, Task
from datasets.fets import FeTS2021, Phantom
from datasets.slices import SliceDataset, assemble_volume, load_slices, map_labels, preprocess_subjects

NATIVE = (32, 32)  # the tiny phantom's in-plane size: no resampling, so values can be checked exactly


@pytest.fixture(scope="module")
def native(phantom: Phantom, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return preprocess_subjects(phantom, phantom.labelled_subjects(), tmp_path_factory.mktemp("c"), NATIVE)


def _seg(phantom: Phantom, sid: str) -> np.ndarray:
    subject = {s.id: s for s in phantom.subjects()}[sid]
    return np.asarray(nib.load(str(subject.label)).dataobj)


def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = dio.load_subject

    def counting(subject, *args, **kwargs):  # noqa: ANN001, ANN202
        seen.append(subject.id)
        return real(subject, *args, **kwargs)

    monkeypatch.setattr(dio, "load_subject", counting)
    return seen


def test_cache_contents(phantom: Phantom, native: dict[str, Path]) -> None:
    assert sorted(native) == [s.id for s in phantom.subjects()] and native.bad == {}
    for subject in phantom.subjects():
        with np.load(native[subject.id]) as data:
            images = {m: nib.load(str(p)).get_fdata() for m, p in subject.images.items()}
            brain = np.any([x != 0 for x in images.values()], axis=0)
            z = np.flatnonzero(brain.any(axis=(0, 1)))
            assert np.array_equal(data["z"], z) and tuple(data["volume_shape"]) == (32, 32, 16)
            for m, raw in images.items():
                img = np.moveaxis(data[f"img_{m}"], 0, -1)
                inside = brain[..., z]
                ref = (raw[brain] - raw[brain].mean()) / raw[brain].std()  # independent z-score
                assert np.allclose(img[inside], ref, atol=1e-4)
                assert abs(img[inside].mean()) < 1e-5 and abs(img[inside].std() - 1) < 1e-4
                assert np.all(img[~inside] == 0)
            assert np.array_equal(np.moveaxis(data["label"], 0, -1), _seg(phantom, subject.id)[..., z])


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("01-t1-TC", lambda s: np.isin(s, [1, 4]).astype(np.uint8)),
        ("01-flair-WT", lambda s: (s > 0).astype(np.uint8)),
        ("01-t2-NCR+ED+ET", lambda s: np.select([s == 1, s == 2, s == 4], [1, 2, 3], 0)),
        ("01-t2-ED+TC", lambda s: np.select([np.isin(s, [1, 4]), s == 2], [2, 1], 0)),
        ("01-t2-TC+NCR", lambda s: np.select([s == 1, s == 4], [2, 1], 0)),  # later region wins
        ("01-t2-WT+TC+ET", lambda s: np.select([s == 4, s == 1, s == 2], [3, 2, 1], 0)),
    ],
)
def test_label_mapping(phantom: Phantom, native: dict[str, Path], task: str, expected) -> None:  # noqa: ANN001
    t = phantom.parse_task(task)
    ids = [s.id for s in phantom.task_subjects(t)]
    slices = load_slices(native, ids, t, phantom.regions)
    assert slices.images.dtype == np.float32 and slices.labels.dtype == np.uint8
    assert slices.images.shape[1:] == (1, 32, 32) and slices.labels.shape == (len(slices), 32, 32)
    assert slices.subject_ids == ids and slices.subject_index.dtype == np.int32 and slices.z.dtype == np.int32
    for sid in ids:
        truth = assemble_volume(slices, sid, slices.labels)
        assert np.array_equal(truth, expected(_seg(phantom, sid)))
    with np.load(native[ids[0]]) as data:
        rows = slices.subject_index == 0
        assert np.array_equal(slices.images[rows, 0], data[f"img_{t.modality}"])


def test_map_labels_random() -> None:
    """Against a per-pixel loop on random raw labels."""
    rng = np.random.default_rng(0)
    raw = rng.choice([0, 1, 2, 4], size=(5, 7, 7))
    regions = {"A": frozenset({1, 4}), "B": frozenset({2, 4}), "C": frozenset({0})}
    task = Task("*", "t1", ("A", "B", "C"))
    ref = np.zeros(raw.shape, dtype=np.uint8)
    for idx, value in np.ndenumerate(raw):
        for i, name in enumerate(task.regions):
            if value in regions[name]:
                ref[idx] = i + 1
    assert np.array_equal(map_labels(raw, task, regions), ref)


def test_assemble_volume(phantom: Phantom, native: dict[str, Path]) -> None:
    t = phantom.parse_task("t1-WT")
    ids = [s.id for s in phantom.task_subjects(t)][:3]
    slices = load_slices(native, ids, t, phantom.regions)
    sid = ids[1]
    rows = slices.subject_index == 1
    vol = assemble_volume(slices, sid, slices.images[:, 0])
    assert vol.shape == (32, 32, 16) and vol.dtype == np.float32
    assert np.array_equal(assemble_volume(slices, sid, slices.images[rows, 0]), vol)  # per-subject rows
    dropped = np.setdiff1d(np.arange(16), slices.z[rows])
    assert np.all(vol[..., dropped] == 0)
    assert np.array_equal(np.moveaxis(vol[..., slices.z[rows]], -1, 0), slices.images[rows, 0])
    with pytest.raises(ValueError, match="per_slice has 2 slices"):
        assemble_volume(slices, sid, slices.images[:2, 0])


def test_resize(phantom: Phantom, tmp_path: Path) -> None:
    subjects = phantom.labelled_subjects()[:2]
    cached = preprocess_subjects(phantom, subjects, tmp_path, (16, 8))
    t = phantom.parse_task("t2-WT")
    slices = load_slices(cached, [s.id for s in subjects], t, phantom.regions)
    assert slices.images.shape[1:] == (1, 16, 8) and slices.labels.shape[1:] == (16, 8)
    assert slices.spacing[subjects[0].id] == (2.0, 4.0, 1.0)
    assert slices.volume_shape[subjects[0].id] == (16, 8, 16)
    assert set(np.unique(slices.labels)) == {0, 1}  # nearest: no new values
    seg = _seg(phantom, subjects[0].id)
    assert abs((slices.labels[slices.subject_index == 0] > 0).sum() * 8 - (seg > 0).sum()) < 0.3 * (seg > 0).sum()


def test_cache_reuse_and_invalidation(phantom_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = shutil.copytree(phantom_dir, tmp_path / "data")
    adapter = Phantom(root)
    subjects = adapter.labelled_subjects()[:3]
    decoded = _count_decodes(monkeypatch)
    first = preprocess_subjects(adapter, subjects, tmp_path / "c", (16, 16))
    mtimes = {sid: p.stat().st_mtime_ns for sid, p in first.items()}
    assert len(decoded) == 3
    again = preprocess_subjects(Phantom(root), subjects, tmp_path / "c", (16, 16))
    assert again == first and len(decoded) == 3
    assert {sid: p.stat().st_mtime_ns for sid, p in again.items()} == mtimes
    touched = subjects[1].images["t2"]
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    third = preprocess_subjects(Phantom(root), subjects, tmp_path / "c", (16, 16))
    assert decoded[3:] == [subjects[1].id] and third[subjects[1].id] != first[subjects[1].id]
    preprocess_subjects(adapter, subjects, tmp_path / "c", (24, 24))
    assert len(decoded) == 7
    assert not [p for p in (tmp_path / "c" / "subjects").iterdir() if ".tmp-" in p.name]


def _break(root: Path) -> dict[str, str]:
    """Three kinds of bad subject; returns id -> expected reason fragment."""
    s2, s5, s7 = "FeTS21_Training_002", "FeTS21_Training_005", "FeTS21_Training_007"
    t1 = root / s2 / f"{s2}_t1.nii.gz"
    t1.write_bytes(t1.read_bytes()[:300])  # truncated gzip
    seg_path = root / s5 / f"{s5}_seg.nii.gz"
    seg = nib.load(str(seg_path))
    data = np.asarray(seg.dataobj).copy()
    data[0, 0, 0] = 3
    nib.save(nib.Nifti1Image(data, seg.affine), str(seg_path))
    nib.save(nib.Nifti1Image(np.ones((32, 32, 15), np.float32), np.eye(4)), str(root / s7 / f"{s7}_flair.nii.gz"))
    return {
        s2: f"{s2}_t1.nii.gz: unreadable",
        s5: "label values [3] outside [0, 1, 2, 4]",
        s7: f"differs from {s7}_flair.nii.gz (32, 32, 15)",
    }


def test_bad_subjects(phantom_dir: Path, tmp_path: Path) -> None:
    root = shutil.copytree(phantom_dir, tmp_path / "data")
    expected = _break(root)
    adapter = FeTS2021(root)
    with pytest.raises(DataError, match="^3 bad subject") as info:
        preprocess_subjects(adapter, adapter.labelled_subjects(), tmp_path / "c", (16, 16))
    for sid, reason in expected.items():
        assert f"{sid}: " in str(info.value) and reason in str(info.value)
    assert "\n" not in str(info.value)
    result = preprocess_subjects(adapter, adapter.labelled_subjects(), tmp_path / "c", (16, 16), skip_bad=True)
    assert sorted(result.bad) == sorted(expected) and len(result) == 5
    assert all(reason in result.bad[sid] for sid, reason in expected.items())
    with pytest.raises(DataError, match="FeTS21_Training_002: not in the preprocessed cache"):
        load_slices(result, ["FeTS21_Training_002"], adapter.parse_task("t1-WT"), adapter.regions)


def test_unlabelled_subject(phantom_dir: Path, tmp_path: Path) -> None:
    """An unlabelled subject is cached without label; load_slices refuses it for a task."""
    root = shutil.copytree(phantom_dir, tmp_path / "data")
    sid = "FeTS21_Training_004"
    (root / sid / f"{sid}_seg.nii.gz").unlink()
    adapter = FeTS2021(root)
    subject = [s for s in adapter.subjects() if s.id == sid]
    cached = preprocess_subjects(adapter, subject, tmp_path / "c", (16, 16))
    with np.load(cached[sid]) as data:
        assert "label" not in data.files
    with pytest.raises(DataError, match="unlabelled"):
        load_slices(cached, [sid], adapter.parse_task("t1-WT"), adapter.regions)


def test_parallel_matches_serial(phantom: Phantom, tmp_path: Path) -> None:
    subjects = phantom.labelled_subjects()[:3]
    serial = preprocess_subjects(phantom, subjects, tmp_path / "a", (16, 16))
    parallel = preprocess_subjects(phantom, subjects, tmp_path / "b", (16, 16), jobs=2)
    for sid in serial:
        assert serial[sid].name == parallel[sid].name
        with np.load(serial[sid]) as a, np.load(parallel[sid]) as b:
            assert all(np.array_equal(a[k], b[k]) for k in a.files)


def _dataset(phantom: Phantom, native: dict[str, Path], **kwargs) -> SliceDataset:  # noqa: ANN003
    t = phantom.parse_task("t1-NCR+ED+ET")
    return SliceDataset(load_slices(native, [s.id for s in phantom.task_subjects(t)][:3], t, phantom.regions), **kwargs)


def test_dataset_plain(phantom: Phantom, native: dict[str, Path]) -> None:
    ds = _dataset(phantom, native)
    item = ds[5]
    assert len(ds) == len(ds.slices) and item["index"] == 5
    assert item["image"].dtype == torch.float32 and item["image"].shape == (1, 32, 32)
    assert item["label"].dtype == torch.int64 and item["label"].shape == (32, 32)
    assert np.array_equal(item["image"].numpy(), ds.slices.images[5])
    assert np.array_equal(item["label"].numpy(), ds.slices.labels[5])
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 1, 32, 32) and batch["index"].tolist() == [0, 1, 2, 3]


def test_dataset_augment_joint(phantom: Phantom, native: dict[str, Path]) -> None:
    ds = _dataset(phantom, native, augment=True, seed=3)
    ds.attach("risk", ds.slices.labels.astype(np.float16))
    ds.attach("raw", ds.slices.images[:, 0])
    changed = 0
    for i in range(len(ds)):
        item = ds[i]
        assert item["risk"].dtype == torch.float32 and item["risk"].shape == (32, 32)
        assert torch.equal(item["risk"], item["label"].float())  # the map moves exactly like the label
        raw, img = item["raw"].numpy().ravel(), item["image"][0].numpy().ravel()
        if raw.std() > 0:  # image = a * raw + b (intensity aug only), same spatial transform
            a, b = np.polyfit(raw, img, 1)
            assert np.allclose(a * raw + b, img, atol=1e-4) and 0.85 < a < 1.15 and abs(b) <= 0.1 + 1e-6
        changed += not np.array_equal(item["label"].numpy(), ds.slices.labels[i])
    assert changed > len(ds) // 4  # the spatial transforms do happen
    with pytest.raises(ValueError, match="shape"):
        ds.attach("bad", np.zeros((2, 32, 32)))


def test_dataset_deterministic(phantom: Phantom, native: dict[str, Path]) -> None:
    def run(seed: int) -> list[torch.Tensor]:
        ds = _dataset(phantom, native, augment=True, seed=seed)
        return [torch.cat([x["image"].ravel(), x["label"].ravel().float()]) for x in (ds[i] for i in range(12))]

    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
