"""The results store: one Parquet file per cell, long format, written atomically."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.core.schema import REQUIRED_SCHEMA, SCHEMA
from datasets.core.files import atomic_write

COLUMNS = list(SCHEMA)  # the leaderboard reads the same schema (benchmarks/core/schema.py)


LOST = "WorkerLost"  # error prefix of a cell whose worker died before writing: redone by the next run
STALE_AFTER_S = 3600  # a temporary file this old, from any host, belongs to a dead writer


class StoreError(ValueError):
    """The results folder cannot be used."""


class Store:
    """``ROOT/cells/<cell_key>.parquet``; a cell file exists only once complete.

    ``threads`` (a run's torch threads per cell) makes ``state`` treat rows computed with another
    thread count as absent: stores written before the count was in the key hold such rows.
    """

    def __init__(self, root: Path, threads: int | None = None) -> None:
        self.root = Path(root)
        self.cells = self.root / "cells"
        self.threads = threads

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
        """``ok``/``failed``/``skipped`` (its method declined it) for a finished cell, None when absent."""
        state = self.state(key)
        return "failed" if state == "lost" else state

    def progress_path(self, key: str) -> Path:
        """Where a running cell reports its phase and step (``benchmarks.progress``); gone once the run counted it."""
        return self.cells / f".{key}.running"

    def state(self, key: str) -> str | None:
        """Like ``status``, but ``lost`` for a failure recorded because the cell's worker died (``LOST``).

        None also for a damaged file (``damaged``) and for rows of another thread count than ``threads``.
        """
        path = self.path(key)
        if not path.exists() or damage(path):
            return None
        rows = pd.read_parquet(path, columns=["status", "error"])
        if self.threads is not None and self.recorded_threads(key) not in (None, self.threads):
            return None  # computed before the thread count was in the key (``rekey`` moves it)
        if (rows["status"] == "skipped").all():
            return "skipped"
        failed = rows[rows["status"] == "failed"]
        if failed.empty:
            return "ok"
        return "lost" if failed["error"].str.startswith(LOST).all() else "failed"

    def read_cell(self, key: str) -> pd.DataFrame:
        """The rows of one finished cell."""
        return pd.read_parquet(self.path(key))

    def recorded_threads(self, key: str) -> int | None:
        """The torch thread count the cell's rows record; None when absent or unknown (rows before the column)."""
        path = self.path(key)
        if not path.exists() or damage(path) or "threads" not in pq.read_schema(path).names:
            return None
        threads = pd.read_parquet(path, columns=["threads"])["threads"].dropna()
        return int(threads.iloc[0]) if len(threads) else None

    def rekey(self, key: str, new_key: str) -> Path:
        """Move a cell's rows to ``new_key`` (its ``cell_key`` column too); an existing ``new_key`` file is kept
        and this one set aside instead. Returns where the rows went."""
        if self.path(new_key).exists():
            return self.set_aside(self.path(key), "superseded")
        self.write(new_key, self.read_cell(key).assign(cell_key=new_key))
        self.path(key).unlink()
        return self.path(new_key)

    def damaged(self) -> list[tuple[Path, str]]:
        """(file, reason) for every cell file that cannot be read as one (``damage``)."""
        files = sorted(self.cells.glob("*.parquet")) if self.cells.is_dir() else []
        return [(path, why) for path in files if (why := damage(path))]

    def set_aside(self, path: Path, why: str = "damaged") -> Path:
        """Rename a cell file to ``<name>.<why>-<timestamp>`` (never read as a cell again; nothing deleted)."""
        target = path.with_name(f"{path.name}.{why}-{datetime.now().strftime('%Y%m%dT%H%M%S%f')}")
        os.replace(path, target)
        return target

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
        """Delete temporary files left by killed writers, and progress reports older than ``STALE_AFTER_S``;
        returns how many.

        A file is stale when its writer ran on this host and is gone, or when it is older
        than ``STALE_AFTER_S`` (writers on other hosts). ``read`` ignores them either way.
        """
        removed = 0
        for report in self.cells.glob(".*.running") if self.cells.is_dir() else []:
            try:
                if time.time() - report.stat().st_mtime > STALE_AFTER_S:
                    report.unlink()
                    removed += 1
            except OSError:
                continue
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
        """Every finished cell's rows (empty frame with the columns when none); damaged files are left out."""
        files = sorted(self.cells.glob("*.parquet")) if self.cells.is_dir() else []
        files = [f for f in files if not damage(f)]
        if not files:
            return pd.DataFrame(columns=COLUMNS)
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)

    def export_csv(self, path: Path) -> Path:
        self.read().to_csv(path, index=False)
        return path


def damage(path: Path) -> str | None:
    """Why ``path`` is not a readable cell file (truncated, not Parquet, lacking the store's columns); None if it is."""
    try:
        missing = [c for c in REQUIRED_SCHEMA if c not in pq.read_schema(path).names]
        if missing:
            return f"not a cell file (lacks column(s) {', '.join(missing[:3])})"
        pq.read_table(path, columns=["status", "error"])
    except (OSError, pa.ArrowException) as exc:
        return f"unreadable Parquet ({type(exc).__name__}: {str(exc).split('.')[0][:80]})"
    return None


def _alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    return True
