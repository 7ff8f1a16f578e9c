"""Subject splits and few-shot draws."""

from __future__ import annotations

import pytest

from datasets.base import DataError
from datasets.splits import few_shot, split_subjects

IDS = [f"s{i:02d}" for i in range(24)]


@pytest.mark.parametrize("n", [3, 4, 5, 7, 24, 100])
def test_split_disjoint_covering(n: int) -> None:
    ids = IDS[:n] if n <= 24 else [f"x{i}" for i in range(n)]
    split = split_subjects(ids, seed=0)
    parts = [set(split[k]) for k in ("train", "val", "test")]
    assert all(parts) and sum(map(len, parts)) == n and set().union(*parts) == set(ids)
    assert len(split["train"]) >= len(split["test"])


def test_split_seeded() -> None:
    a = split_subjects(IDS, seed=1)
    assert a == split_subjects(list(reversed(IDS)), seed=1)  # input order does not matter
    assert a != split_subjects(IDS, seed=2)
    assert [len(a[k]) for k in ("train", "val", "test")] == [14, 5, 5]
    b = split_subjects(IDS, seed=1, fractions=(0.5, 0.25, 0.25))
    assert [len(b[k]) for k in ("train", "val", "test")] == [12, 6, 6]


def test_split_errors() -> None:
    with pytest.raises(DataError, match="at least 3 labelled subjects.*got 2"):
        split_subjects(IDS[:2], seed=0)
    with pytest.raises(DataError, match="summing to 1"):
        split_subjects(IDS, seed=0, fractions=(0.5, 0.5, 0.5))
    with pytest.raises(DataError, match="duplicate"):
        split_subjects(IDS[:3] + IDS[:1], seed=0)


def test_few_shot() -> None:
    train = IDS[:10]
    assert few_shot(train, 0, seed=0) == sorted(train)
    two, five = few_shot(train, 2, seed=3), few_shot(train, 5, seed=3)
    assert len(two) == 2 and set(two) <= set(five) <= set(train)  # nested draws
    assert two == few_shot(list(reversed(train)), 2, seed=3)
    assert {tuple(few_shot(train, 2, seed=s)) for s in range(10)} != {tuple(two)}
    assert few_shot(train, 10, seed=0) == sorted(train)


def test_few_shot_errors() -> None:
    with pytest.raises(DataError, match="^--few-shot 11 exceeds the 10 training subjects of task 01-t1-TC$"):
        few_shot(IDS[:10], 11, seed=0, task="01-t1-TC")
    with pytest.raises(DataError, match="--few-shot -1 must be >= 0"):
        few_shot(IDS[:10], -1, seed=0)
