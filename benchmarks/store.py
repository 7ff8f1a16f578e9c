"""The results store: one Parquet file per cell, long format, written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

COLUMNS = [
    "cell_key", "suite", "dataset", "transfer", "source_task", "target_task", "transfer_type",
    "method", "method_params", "backbone", "seed", "few_shot", "target_steps", "subject_id", "region",
    "dice", "hd95", "status", "error", "leep", "nce", "code_version", "torch_version", "device",
    "wall_s", "created_at",
]


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
        path = self.path(key)
        if not path.exists():
            return None
        return "failed" if (pd.read_parquet(path, columns=["status"])["status"] == "failed").any() else "ok"

    def write(self, key: str, rows: pd.DataFrame) -> Path:
        """Write a cell's rows atomically: temporary file in the same folder, then rename."""
        missing = [c for c in COLUMNS if c not in rows.columns]
        if missing:
            raise ValueError(f"cell {key}: rows lack columns {missing}")
        self.cells.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cells, prefix=f".{key}-", suffix=".tmp")
        os.close(fd)
        try:
            rows[COLUMNS + [c for c in rows.columns if c not in COLUMNS]].to_parquet(tmp, index=False)
            os.replace(tmp, self.path(key))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return self.path(key)

    def read(self) -> pd.DataFrame:
        """Every finished cell's rows (empty frame with the columns when none)."""
        files = sorted(self.cells.glob("*.parquet")) if self.cells.is_dir() else []
        if not files:
            return pd.DataFrame(columns=COLUMNS)
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)

    def export_csv(self, path: Path) -> Path:
        self.read().to_csv(path, index=False)
        return path
