"""Task grammar and its validation against an adapter (errors list what exists)."""

from __future__ import annotations

import pytest

from datasets.base import DataError, Task
from datasets.fets import Phantom


@pytest.mark.parametrize(
    ("text", "has_groups", "expected"),
    [
        ("01-t1-TC", True, Task("01", "t1", ("TC",))),
        ("*-flair-WT", True, Task("*", "flair", ("WT",))),
        ("t2-ET", True, Task("*", "t2", ("ET",))),
        ("t2-GM", False, Task("", "t2", ("GM",))),
        ("t1-CSF+GM+WM", False, Task("", "t1", ("CSF", "GM", "WM"))),
        ("02-t1ce-NCR+ED+ET", True, Task("02", "t1ce", ("NCR", "ED", "ET"))),
    ],
)
def test_parse_valid(text: str, has_groups: bool, expected: Task) -> None:
    task = Task.parse(text, has_groups)
    assert task == expected and task.num_classes == 1 + len(expected.regions)
    assert Task.parse(str(task), has_groups) == task


@pytest.mark.parametrize(
    ("text", "has_groups", "match"),
    [
        ("t1", True, "not of the form"),
        ("a-b-c-d", True, "not of the form"),
        ("01-t1-TC", False, "not of the form MODALITY-REGION"),
        ("01--TC", True, "empty modality or region"),
        ("t1-TC+", True, "empty modality or region"),
    ],
)
def test_parse_invalid(text: str, has_groups: bool, match: str) -> None:
    with pytest.raises(DataError, match=match):
        Task.parse(text, has_groups)


def test_adapter_validation(phantom: Phantom) -> None:
    assert phantom.parse_task("03-t2-WT") == Task("03", "t2", ("WT",))
    with pytest.raises(DataError, match="unknown group '09'; valid: 01, 02, 03, 04"):
        phantom.parse_task("09-t1-TC")
    with pytest.raises(DataError, match="unknown modality 'dwi'; valid: flair, t1, t1ce, t2"):
        phantom.parse_task("01-dwi-TC")
    with pytest.raises(DataError, match="unknown region 'GM'; valid: NCR, ED, ET, TC, WT"):
        phantom.parse_task("01-t1-GM")


def test_task_subjects(phantom: Phantom) -> None:
    assert [s.id for s in phantom.task_subjects(phantom.parse_task("02-t1-TC"))] == [
        "FeTS21_Training_002",
        "FeTS21_Training_006",
    ]
    assert len(phantom.task_subjects(phantom.parse_task("t1-TC"))) == 8
