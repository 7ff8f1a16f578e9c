"""All-or-nothing file writes: every file a run leaves behind is complete or absent, with the user's umask."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def umask() -> int:
    """This process's umask: from /proc where it is listed (setting the umask to read it is not thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def umask_mode(directory: bool = False) -> int:
    """The permissions ``open`` or ``mkdir`` would give a new file (0o666) or folder (0o777) under the umask.

    ``tempfile`` creates owner-only files and folders (0600, 0700); what it made is chmod-ed to this before
    it takes its final name, so a results folder on a shared disk is as readable as any other file.
    """
    return (0o777 if directory else 0o666) & ~umask()


@contextmanager
def atomic_write(path: Path, mode: str = "wb", prefix: str | None = None) -> Iterator[IO]:
    """Yield a file handle whose content replaces ``path`` only when the block completes.

    The data goes to a temporary file in the same folder (``prefix`` + random + ``.tmp``; default
    prefix ``.NAME-``), is flushed and fsynced, then renamed over ``path``: a reader never sees a
    half-written file, and a failure inside the block removes the temporary file and leaves ``path``
    as it was. The file gets the umask's permissions (``umask_mode``), not the temporary file's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix or f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fchmod(fh.fileno(), umask_mode())
            os.fsync(fh.fileno())  # on disk before it gets its name
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
