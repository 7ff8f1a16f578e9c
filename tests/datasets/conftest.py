"""Shared fixtures: the default mni152 set generated once into a temporary cache; one torch thread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from datasets.mni152 import mni152_root


@pytest.fixture(scope="session")
def mni152_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder holding ``mni152-v1-s0`` (24 subjects, default parameters)."""
    cache = tmp_path_factory.mktemp("mni152-cache")
    mni152_root(cache)
    return cache


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Train with one intra-op thread: on 2 shared cores, 2 OpenMP threads ran a tiny UNet step 8x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
