"""All-or-nothing file writes: every file a run leaves behind is complete or absent."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_write(path: Path, mode: str = "wb", prefix: str | None = None) -> Iterator[IO]:
    """Yield a file handle whose content replaces ``path`` only when the block completes.

    The data goes to a temporary file in the same folder (``prefix`` + random + ``.tmp``; default
    prefix ``.NAME-``), is flushed and fsynced, then renamed over ``path``: a reader never sees a
    half-written file, and a failure inside the block removes the temporary file and leaves ``path``
    as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix or f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())  # on disk before it gets its name
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
