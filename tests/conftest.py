"""Shared fixtures: a tiny procedural phantom (FeTS layout) generated once per session."""

from __future__ import annotations

from collections.abc import Callable
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


@pytest.fixture(scope="session")
def grid_phantom(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(phantom root, preprocessed-subjects folder): 2 groups of 6 subjects, 32x32x16, at 32 px; read-only.

    For runs of the whole CLI: give each run its own cache with ``cache_with_subjects``.
    """
    from benchmarks.data import open_dataset

    base = tmp_path_factory.mktemp("grid")
    root = generate_phantom(base / "phantom", n_subjects=12, n_groups=2, shape=(32, 32, 16))
    open_dataset("phantom", root, {}, base / "cache", 32, 0)
    return root, base / "cache" / "subjects"


@pytest.fixture(scope="session")
def cache_with_subjects(grid_phantom: tuple[Path, Path]) -> Callable[[Path], Path]:
    """``make(folder)``: a new cache folder that shares ``grid_phantom``'s preprocessed subjects (own models)."""

    def make(cache: Path) -> Path:
        cache.mkdir(parents=True)
        (cache / "subjects").symlink_to(grid_phantom[1])
        return cache

    return make


@pytest.fixture(scope="session")
def grid_suite(
    tmp_path_factory: pytest.TempPathFactory, grid_phantom: tuple[Path, Path], cache_with_subjects: Callable
) -> Callable[[str], tuple[Path, Path, Callable[[Path], Path]]]:
    """``make(text)``: (a new suite file holding ``text``, ``grid_phantom``'s root, ``cache_with_subjects``)."""

    def make(text: str) -> tuple[Path, Path, Callable[[Path], Path]]:
        suite = tmp_path_factory.mktemp("suite") / "suite.yaml"
        suite.write_text(text)
        return suite, grid_phantom[0], cache_with_subjects

    return make
