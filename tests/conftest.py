"""Shared fixtures: a tiny procedural phantom (FeTS layout) generated once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from datasets.fets import Phantom
from datasets.phantom import generate_phantom

TINY = {"n_subjects": 8, "n_groups": 4, "shape": (32, 32, 16), "seed": 0}


@pytest.fixture(scope="session")
def phantom_params() -> dict:
    """The parameters ``phantom_dir`` was generated with (a copy)."""
    return dict(TINY)


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 subjects in 4 partitions, 32x32x16 voxels; treat as read-only."""
    return generate_phantom(tmp_path_factory.mktemp("data") / "phantom", **TINY)


@pytest.fixture(scope="session")
def phantom(phantom_dir: Path) -> Phantom:
    """The phantom adapter on ``phantom_dir``."""
    return Phantom(phantom_dir)
