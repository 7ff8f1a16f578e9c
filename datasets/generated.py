"""Embedded datasets generated once into the cache: atomic, concurrency-safe, parameter-checked."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from datasets.base import DataError

_MAY_GENERATE: ContextVar[bool] = ContextVar("ntbench_may_generate", default=True)


class NotGenerated(DataError):
    """An embedded dataset is not in the cache yet and generating it was not allowed (a dry run)."""

    def __init__(self, root: Path, params: dict) -> None:
        super().__init__(f"{root}: not generated yet")
        self.root, self.params = root, params


@contextmanager
def no_generation() -> Iterator[None]:
    """Within this block ``generate_once`` raises ``NotGenerated`` instead of writing a dataset."""
    token = _MAY_GENERATE.set(False)
    try:
        yield
    finally:
        _MAY_GENERATE.reset(token)


def check_existing(root: Path, params: dict, kind: str) -> None:
    """Refuse a folder that is not a ``kind`` set generated with exactly ``params``."""
    marker = root / f"{kind}.json"
    try:
        found = json.loads(marker.read_text())
    except (OSError, ValueError):
        raise DataError(f"{root}: exists but is not a generated {kind} set (no readable {marker.name})") from None
    if found != params:
        raise DataError(f"{root}: holds a {kind} set generated with {found}, not {params}")


def generate_once(root: Path, params: dict, kind: str, build: Callable[[Path], None]) -> Path:
    """Run ``build(tmp)`` in a temporary sibling folder and rename it to ``root``.

    ``root`` is therefore either absent or complete; a concurrent generator that loses the
    rename discards its copy; an existing ``root`` made with the same ``params`` is returned.
    """
    root = Path(root)
    if root.exists():
        check_existing(root, params, kind)
        return root
    if not _MAY_GENERATE.get():
        raise NotGenerated(root, params)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f"{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        build(tmp)
        (tmp / f"{kind}.json").write_text(json.dumps(params))
        try:
            os.rename(tmp, root)
        except OSError:
            if not root.exists():
                raise
            check_existing(root, params, kind)  # a concurrent generator won the race
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
