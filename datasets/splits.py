"""Seeded subject splits shared by every task of a dataset, and few-shot draws."""

from __future__ import annotations

import numpy as np

from datasets.base import DataError
from datasets.core.fractions import DEFAULT_SPLIT_FRACTIONS, check_fractions


def split_subjects(
    subject_ids: list[str], seed: int, fractions: tuple[float, float, float] = DEFAULT_SPLIT_FRACTIONS
) -> dict[str, list[str]]:
    """Disjoint seeded train/val/test split (each sorted); every split non-empty.

    Called once on all labelled subjects of a dataset, so source and target tasks that
    share subjects share the split. Independent of the input order of ``subject_ids``.
    """
    ids = sorted(subject_ids)
    if len(set(ids)) != len(ids):
        raise DataError(f"split: duplicate subject ids {sorted({i for i in ids if ids.count(i) > 1})}")
    try:
        fractions = check_fractions(fractions)
    except ValueError as exc:
        raise DataError(f"split fractions {fractions!r}: {exc}") from None
    n = len(ids)
    if n < 3:
        raise DataError(f"split: need at least 3 labelled subjects for train/val/test, got {n}")
    n_val = max(1, round(fractions[1] * n))
    n_test = max(1, round(fractions[2] * n))
    while n - n_val - n_test < 1:  # rounding up tiny splits can starve train
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    order = np.random.default_rng(seed).permutation(n)
    picked = [ids[i] for i in order]
    return {
        "train": sorted(picked[: n - n_val - n_test]),
        "val": sorted(picked[n - n_val - n_test : n - n_test]),
        "test": sorted(picked[n - n_test :]),
    }


def few_shot(train_ids: list[str], k: int, seed: int, task: str = "") -> list[str]:
    """``k`` seeded training subjects (``k = 0``: all); draws are nested (k=2 is inside k=4).

    ``task`` only names the task in the error raised when ``k`` exceeds the training set.
    """
    ids = sorted(train_ids)
    if k < 0:
        raise DataError(f"--few-shot {k} must be >= 0 (0 = all training subjects)")
    if k == 0:
        return ids
    if k > len(ids):
        raise DataError(f"--few-shot {k} exceeds the {len(ids)} training subjects of task {task or '?'}")
    order = np.random.default_rng(seed).permutation(len(ids))
    return sorted(ids[i] for i in order[:k])
