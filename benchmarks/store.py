"""The results store: one Parquet file per cell, long format, written atomically."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.core.files import atomic_write
from benchmarks.core.schema import SCHEMA

COLUMNS = list(SCHEMA)  # the leaderboard reads the same schema (benchmarks/core/schema.py)


LOST = "WorkerLost"  # error prefix of a cell whose worker died before writing: redone by the next run
STALE_AFTER_S = 3600  # a temporary file this old, from any host, belongs to a dead writer


class StoreError(ValueError):
    """The results folder cannot be used."""


class Store:
    """``ROOT/cells/<cell_key>.parquet``; a cell file exists only once complete."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.cells = self.root / "cells"

    def check_writable(self) -> None:
        """Fail early, with the path, if --out cannot hold results."""
        try:
            self.cells.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.cells, prefix=".probe-", delete=True)
            probe.close()
        except OSError as exc:
            raise StoreError(f"--out {self.root}: not writable ({exc.strerror or exc})") from None

    def path(self, key: str) -> Path:
        return self.cells / f"{key}.parquet"

    def status(self, key: str) -> str | None:
        """``ok``/``failed`` for a finished cell, None when absent."""
        state = self.state(key)
        return "failed" if state == "lost" else state

    def state(self, key: str) -> str | None:
        """Like ``status``, but ``lost`` for a failure recorded because the cell's worker died (``LOST``)."""
        path = self.path(key)
        if not path.exists():
            return None
        rows = pd.read_parquet(path, columns=["status", "error"])
        failed = rows[rows["status"] == "failed"]
        if failed.empty:
            return "ok"
        return "lost" if failed["error"].str.startswith(LOST).all() else "failed"

    def read_cell(self, key: str) -> pd.DataFrame:
        """The rows of one finished cell."""
        return pd.read_parquet(self.path(key))

    def write(self, key: str, rows: pd.DataFrame) -> Path:
        """Write a cell's rows atomically: temporary file in the same folder, flushed to disk, then renamed.

        The temporary name carries the writer's host and pid, so ``clean_stale`` can tell a dead
        writer's leftovers from a live one's.
        """
        missing = [c for c in COLUMNS if c not in rows.columns]
        if missing:
            raise ValueError(f"cell {key}: rows lack columns {missing}")
        with atomic_write(self.path(key), prefix=f".{key}~{socket.gethostname()}~{os.getpid()}~") as fh:
            rows[COLUMNS + [c for c in rows.columns if c not in COLUMNS]].to_parquet(fh, index=False)
        return self.path(key)

    def clean_stale(self) -> int:
        """Delete temporary files left by killed writers; returns how many.

        A file is stale when its writer ran on this host and is gone, or when it is older
        than ``STALE_AFTER_S`` (writers on other hosts). ``read`` ignores them either way.
        """
        removed = 0
        host = socket.gethostname()
        for tmp in self.cells.glob(".*.tmp") if self.cells.is_dir() else []:
            parts = tmp.name[1:-4].split("~")
            try:
                dead = len(parts) == 4 and parts[1] == host and not _alive(int(parts[2]))
                if dead or time.time() - tmp.stat().st_mtime > STALE_AFTER_S:
                    tmp.unlink()
                    removed += 1
            except (OSError, ValueError):
                continue  # vanished meanwhile (its writer renamed it) or not ours
        return removed

    def read(self) -> pd.DataFrame:
        """Every finished cell's rows (empty frame with the columns when none)."""
        files = sorted(self.cells.glob("*.parquet")) if self.cells.is_dir() else []
        if not files:
            return pd.DataFrame(columns=COLUMNS)
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)

    def export_csv(self, path: Path) -> Path:
        self.read().to_csv(path, index=False)
        return path


def _alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    return True
