"""Every adapter: each kind of bad subject is reported in one line naming the file; empty folders are refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from layouts import SHAPE, delete, make_brats, make_iseg, make_msd, rewrite, truncate, volumes

from datasets import io as dio
from datasets.base import DATASETS, DataError, DatasetAdapter, Subject
from datasets.slices import preprocess_subjects

BUILDERS: dict[str, tuple[str, Callable[[Path], Path]]] = {
    "brats2021": ("brats", lambda root: make_brats(root, "2021")),
    "brats2023": ("brats", lambda root: make_brats(root, "2023")),
    "iseg2019": ("iseg2019", make_iseg),
    "msd": ("msd", make_msd),
}


def _other_modality(s: Subject) -> Path:
    return s.images[sorted(s.images)[1]]


def _label_with(value: int) -> np.ndarray:
    label = np.zeros(SHAPE, np.uint8)
    label[0, 0, 0] = value
    return label


CORRUPTIONS: dict[str, tuple[Callable[[Subject], Path], str]] = {
    # name: (damage one subject, returning the file the message must name; expected words)
    "missing modality": (lambda s: (delete(p := _other_modality(s)), p)[1], "file not found"),
    "truncated image": (lambda s: (truncate(p := _other_modality(s)), p)[1], "unreadable"),
    "label shape": (lambda s: (rewrite(s.label, np.zeros((24, 24, 10), np.uint8)), s.label)[1], "label shape"),
    "label values": (lambda s: (rewrite(s.label, _label_with(7)), s.label)[1], "label values [7] outside"),
    "spacing": (
        lambda s: (rewrite(p := _other_modality(s), volumes(0, (0, 1), 1)[0][0], (1.0, 1.0, 2.0)), p)[1],
        "spacing",
    ),
}


def _open(kind: str, root: Path) -> DatasetAdapter:
    return DATASETS.get(BUILDERS[kind][0])(root)


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
@pytest.mark.parametrize("kind", list(BUILDERS))
def test_bad_subject_named_in_one_line(kind: str, corruption: str, tmp_path: Path) -> None:
    root = BUILDERS[kind][1](tmp_path / "data")
    victim = _open(kind, root).labelled_subjects()[1]
    damage, words = CORRUPTIONS[corruption]
    named = damage(victim)
    adapter = _open(kind, root)  # paths are resolved when the adapter is built
    result = preprocess_subjects(adapter, adapter.labelled_subjects(), tmp_path / "cache", (32, 32), skip_bad=True)
    assert list(result.bad) == [victim.id]
    assert len(result) == len(adapter.labelled_subjects()) - 1
    reason = result.bad[victim.id]
    assert words in reason and named.name.split(".")[0] in reason
    assert "\n" not in reason
    with pytest.raises(DataError, match=f"1 bad subject.*{victim.id}"):
        preprocess_subjects(adapter, adapter.labelled_subjects(), tmp_path / "cache", (32, 32))


def test_truncated_analyze_message_is_one_line(tmp_path: Path) -> None:
    root = make_iseg(tmp_path / "data", n=3)
    victim = _open("iseg2019", root).labelled_subjects()[0]
    truncate(victim.images["t2"])
    with pytest.raises(DataError) as err:
        dio.load_volume(victim.images["t2"])
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_empty_folder_names_folder_and_layout(kind: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="expected") as err:
        _open(kind, empty)
    assert str(empty) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_unknown_option_refused(kind: str, tmp_path: Path) -> None:
    root = BUILDERS[kind][1](tmp_path / "data")
    with pytest.raises(DataError, match="unknown option"):
        DATASETS.get(BUILDERS[kind][0])(root, lables="2023")


def test_cache_hit_decodes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_brats(tmp_path / "data", "2021", n=3)
    adapter = _open("brats2021", root)
    decoded: list[Path] = []
    load = dio.load_volume
    monkeypatch.setattr(dio, "load_volume", lambda path: (decoded.append(Path(path)), load(path))[1])
    first = preprocess_subjects(adapter, adapter.labelled_subjects(), tmp_path / "cache", (32, 32))
    assert len(decoded) == len(set(decoded)) == 3 * 5  # 4 modalities + label, each read once
    again = preprocess_subjects(_open("brats2021", root), adapter.labelled_subjects(), tmp_path / "cache", (32, 32))
    assert len(decoded) == 15 and dict(again) == dict(first)
