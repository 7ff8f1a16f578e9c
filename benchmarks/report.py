"""What a running cell tells the driver: its phase (source training, fine-tuning, prediction) and step, in a small
file (``Store.progress_path``) that ``benchmarks.progress`` reads wherever the cell runs.

``reporting(path)`` wraps the cell; ``begin`` and ``tick`` are no-ops outside it, so the training loop reports
without knowing who listens.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

WRITE_S = 5.0  # a running cell rewrites its progress file at most this often
TRAINING = ("source training", "fine-tuning")  # phases whose steps count towards a cell's weight


@dataclass
class _Report:
    """The running cell's progress, as written to its file."""

    path: Path
    phase: str = "starting"
    step: int = 0
    total: int = 0
    trained: int = 0  # training steps of the cell so far, both phases
    written: float = 0.0

    def write(self) -> None:
        fields = {"phase": self.phase, "step": self.step, "total": self.total, "trained": self.trained}
        tmp = self.path.with_name(f"{self.path.name}-{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(fields))
            os.replace(tmp, self.path)
        except OSError:
            return  # a progress report never fails a cell
        self.written = time.monotonic()


_REPORT: _Report | None = None


@contextmanager
def reporting(path: Path) -> Iterator[None]:
    """Report the cell run inside the block to ``path`` (``begin``, ``tick``).

    The last report stays until the driver has counted the finished cell (``Progress.finished`` removes it),
    so its steps never drop out of the time left in between.
    """
    global _REPORT
    _REPORT = _Report(Path(path))
    _REPORT.write()
    try:
        yield
        _REPORT.write()
    finally:
        _REPORT = None


def begin(phase: str, total: int) -> None:
    """The running cell enters ``phase`` of ``total`` steps (no-op outside ``reporting``)."""
    if _REPORT is not None:
        _REPORT.phase, _REPORT.step, _REPORT.total = phase, 0, total
        _REPORT.write()


def tick() -> None:
    """One step of the current phase done; written at most every ``WRITE_S`` seconds."""
    if _REPORT is None:
        return
    _REPORT.step += 1
    _REPORT.trained += _REPORT.phase in TRAINING
    if time.monotonic() - _REPORT.written >= WRITE_S:
        _REPORT.write()
