"""Procedural phantom: FeTS layout, determinism, labels, MRI contrasts, scanner differences, atomic writes."""

from __future__ import annotations

import filecmp
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import binary_erosion

from datasets import phantom as ph
from datasets.base import DataError

MODS = ("t1", "t1ce", "t2", "flair")


def _ids(n: int) -> list[str]:
    return [f"FeTS21_Training_{i + 1:03d}" for i in range(n)]


def _read(root: Path, sid: str, what: str) -> np.ndarray:
    return np.asarray(nib.load(str(root / sid / f"{sid}_{what}.nii.gz")).dataobj)


FULL = {"n_subjects": 4, "n_groups": 4, "shape": (64, 64, 32), "seed": 0}


def _tissue(i: int, params: dict) -> np.ndarray:
    """Tissue map of subject i, regenerated with the generator's own stream."""
    return ph._anatomy(np.random.default_rng([params["seed"], i]), params["shape"])[0]


def _core(mask: np.ndarray) -> np.ndarray:
    """The mask eroded once (away from partial-volume borders) unless that empties it."""
    eroded = binary_erosion(mask)
    return eroded if eroded.sum() >= 10 else mask


def test_layout(phantom_dir: Path, phantom_params: dict) -> None:
    p1 = pd.read_csv(phantom_dir / "partitioning_1.csv", dtype=str)
    p2 = pd.read_csv(phantom_dir / "partitioning_2.csv", dtype=str)
    assert (phantom_dir / "partitioning_1.csv").read_text().splitlines()[0] == "Subject_ID,Partition_ID"
    assert list(p1["Subject_ID"]) == _ids(8) == list(p2["Subject_ID"])
    assert sorted(set(p1["Partition_ID"])) == ["01", "02", "03", "04"]
    assert sorted(set(p2["Partition_ID"])) == [f"{g:02d}" for g in range(1, 9)]
    for sid in _ids(8):
        names = sorted(p.name for p in (phantom_dir / sid).iterdir())
        assert names == sorted(f"{sid}_{m}.nii.gz" for m in (*MODS, "seg"))
        img = nib.load(str(phantom_dir / sid / f"{sid}_t1.nii.gz"))
        assert img.get_data_dtype() == np.float32 and img.shape == phantom_params["shape"]
        assert np.allclose(img.affine, np.eye(4)) and img.header.get_zooms() == (1.0, 1.0, 1.0)
        assert nib.load(str(phantom_dir / sid / f"{sid}_seg.nii.gz")).get_data_dtype() == np.uint8
    assert not [p for p in phantom_dir.parent.iterdir() if ".tmp-" in p.name]


def test_deterministic(phantom_dir: Path, phantom_params: dict, tmp_path: Path) -> None:
    again = ph.generate_phantom(tmp_path / "again", **phantom_params)
    match, mismatch, errors = filecmp.cmpfiles(
        phantom_dir, again, [f"{s}/{s}_{w}.nii.gz" for s in _ids(8) for w in (*MODS, "seg")], shallow=False
    )
    assert not mismatch and not errors and len(match) == 40  # byte-identical, gzip headers included
    other = ph.generate_phantom(tmp_path / "other", **{**phantom_params, "seed": 1})
    sid = _ids(1)[0]
    assert not np.array_equal(_read(phantom_dir, sid, "t1"), _read(other, sid, "t1"))
    assert not np.array_equal(_read(phantom_dir, sid, "seg"), _read(other, sid, "seg"))


def test_labels(phantom_dir: Path, phantom_params: dict) -> None:
    seen: set[int] = set()
    for i, sid in enumerate(_ids(8)):
        seg = _read(phantom_dir, sid, "seg")
        assert set(np.unique(seg).tolist()) <= {0, 1, 2, 4}
        seen |= set(np.unique(seg).tolist())
        tissue = _tissue(i, phantom_params)
        assert np.array_equal(seg == 1, tissue == ph.NCR) and np.array_equal(seg == 4, tissue == ph.ET)
        for m in MODS:  # skull-stripped: exactly 0 outside the brain, positive inside
            image = _read(phantom_dir, sid, m)
            assert np.all(image[tissue < 0] == 0) and np.all(image[tissue >= 0] > 0)
    assert seen == {0, 1, 2, 4}


def test_contrasts(tmp_path: Path) -> None:
    """Tissue orderings of each sequence (see TISSUE_INTENSITY), at full resolution, away from borders."""
    root = ph.generate_phantom(tmp_path / "full", **FULL)
    for i, sid in enumerate(_ids(4)):
        tissue = _tissue(i, FULL)
        mean = {}
        for m in MODS:
            image = _read(root, sid, m)
            mean[m] = {t: image[_core(tissue == t)].mean() for t in (ph.CSF, ph.GM, ph.WM, ph.ED)}
        assert mean["t1"][ph.CSF] < mean["t1"][ph.GM] < mean["t1"][ph.WM]
        assert mean["t2"][ph.CSF] > mean["t2"][ph.GM] > mean["t2"][ph.WM]
        assert mean["flair"][ph.CSF] < mean["flair"][ph.WM] < mean["flair"][ph.ED]
        et = tissue == ph.ET
        ratio = {m: _read(root, sid, m)[et].mean() / mean[m][ph.WM] for m in ("t1", "t1ce")}
        assert ratio["t1ce"] > ratio["t1"]  # enhancing rim brightens with contrast agent


def test_groups_differ(phantom_dir: Path) -> None:
    """Every pair of institutions differs by > 10% in some modality's median brain intensity."""
    groups = pd.read_csv(phantom_dir / "partitioning_1.csv", dtype=str).set_index("Subject_ID")["Partition_ID"]
    stats: dict[str, list[np.ndarray]] = {}
    for sid, g in groups.items():
        stats.setdefault(g, []).append(
            np.array([np.median(x[x > 0]) for x in (_read(phantom_dir, sid, m) for m in MODS)])
        )
    med = {g: np.mean(v, axis=0) for g, v in stats.items()}
    for a in med:
        for b in med:
            if a < b:
                assert np.max(np.abs(np.log(med[a] / med[b]))) > 0.1, (a, b)


def test_existing_root(tmp_path: Path, phantom_dir: Path, phantom_params: dict) -> None:
    assert ph.generate_phantom(phantom_dir, **phantom_params) == phantom_dir  # same parameters: reused
    with pytest.raises(DataError, match="generated with"):
        ph.generate_phantom(phantom_dir, **{**phantom_params, "seed": 3})
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x").write_text("x")
    with pytest.raises(DataError, match="not a generated phantom"):
        ph.generate_phantom(tmp_path / "junk")


def test_killed_generation_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def dying_save(array: np.ndarray, path: Path) -> None:
        calls.append(path)
        if len(calls) == 7:
            raise KeyboardInterrupt
        real_save(array, path)

    real_save = ph._save
    monkeypatch.setattr(ph, "_save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ph.generate_phantom(tmp_path / "p", n_subjects=2, shape=(16, 16, 8))
    assert list(tmp_path.iterdir()) == []


def test_concurrent_generation(tmp_path: Path) -> None:
    results, errors = [], []

    def gen() -> None:
        try:
            results.append(ph.generate_phantom(tmp_path / "p", n_subjects=3, n_groups=2, shape=(16, 16, 8)))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=gen) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [tmp_path / "p"] * 2
    assert [p.name for p in tmp_path.iterdir()] == ["p"]
    assert len(list((tmp_path / "p").glob("*/*.nii.gz"))) == 15


def test_phantom_root_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    monkeypatch.setattr(ph, "generate_phantom", lambda root, seed, aligned: seen.append((root, seed, aligned)) or root)
    assert ph.phantom_root(tmp_path, seed=5) == tmp_path / "phantom-v2-s5"
    assert ph.phantom_root(tmp_path, aligned=True) == tmp_path / "phantom-v2-s0-aligned"
    assert seen == [(tmp_path / "phantom-v2-s5", 5, False), (tmp_path / "phantom-v2-s0-aligned", 0, True)]


def test_aligned_subjects_share_the_brain_and_the_tumour_site(tmp_path: Path) -> None:
    params = {"n_subjects": 4, "n_groups": 2, "shape": (32, 32, 16), "seed": 0}
    root = ph.generate_phantom(tmp_path / "a", **params, aligned=True)
    brains = [_read(root, sid, "t1") > 0 for sid in _ids(4)]
    assert all(np.array_equal(brains[0], b) for b in brains[1:])  # one brain shape for every subject
    cores = [np.argwhere(_read(root, sid, "seg") > 0).mean(0) for sid in _ids(4)]
    spread = np.ptp(np.stack(cores), axis=0)
    assert spread.max() < 4  # the tumour moves by a few voxels at most
    assert not np.array_equal(_read(root, _ids(1)[0], "seg"), _read(root, _ids(2)[1], "seg"))  # not copies
    moving = ph.generate_phantom(tmp_path / "m", **params)
    moved = [np.argwhere(_read(moving, sid, "seg") > 0).mean(0) for sid in _ids(4)]
    assert np.ptp(np.stack(moved), axis=0).max() > spread.max()  # the default phantom's tumours move
    with pytest.raises(DataError, match="aligned"):
        ph.generate_phantom(root, **params)  # the marker tells the two variants apart


def test_phantom_adapter_option_aligned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datasets import fets

    params = {"n_subjects": 8, "n_groups": 2, "shape": (16, 16, 8), "seed": 0}
    default = ph.generate_phantom(tmp_path / "phantom-v2-s0", **params)
    aligned = ph.generate_phantom(tmp_path / "phantom-v2-s0-aligned", **params, aligned=True)
    monkeypatch.setattr(
        fets, "generate_phantom", lambda root, aligned: ph.generate_phantom(root, **params, aligned=aligned)
    )
    assert fets.Phantom(default).root == default
    assert fets.Phantom(default, aligned="true").root == aligned
    assert fets.Phantom(default, aligned=False).root == default
    with pytest.raises(DataError, match="aligned"):
        fets.Phantom(default, aligned="maybe")


def test_bad_parameters(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="n_subjects"):
        ph.generate_phantom(tmp_path / "p", n_subjects=0)
