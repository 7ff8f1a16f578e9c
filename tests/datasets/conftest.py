"""Session fixture: the default mni152 set, generated once into a temporary cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from datasets.mni152 import mni152_root


@pytest.fixture(scope="session")
def mni152_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder holding ``mni152-v1-s0`` (24 subjects, default parameters)."""
    cache = tmp_path_factory.mktemp("mni152-cache")
    mni152_root(cache)
    return cache
