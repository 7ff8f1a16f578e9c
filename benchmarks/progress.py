"""Signs of life during a run: elapsed time and an estimate of what remains, per cell and as a heartbeat.

Each cell weighs its training steps (target steps, plus source steps for the cell that trains a source
model still missing from the cache); the estimate is elapsed time x remaining weight / finished weight,
and before the first cell has finished the calibrated estimate of ``plan.estimate`` minus the elapsed time.
When the log is not a terminal (no tqdm bars) a heartbeat line is printed whenever nothing else was for
``heartbeat_s`` seconds, so a log never goes silent for minutes during a long cell.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from benchmarks.config import Cell
from benchmarks.sources import source_key

HEARTBEAT_S = 60.0


def clock(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``3700`` -> ``1h01m``."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def weights(cells: list[Cell], cache_dir: Path) -> dict[str, int]:
    """Training steps per cell key; a source model still to train counts for the first cell that needs it."""
    out, claimed = {}, set()
    for cell in cells:
        key = source_key(cell) if cell.source_task else ""
        train_source = bool(key) and key not in claimed and not (Path(cache_dir) / "sources" / f"{key}.pt").exists()
        claimed.add(key)
        out[cell.key] = cell.budget.target_steps + (cell.budget.source_steps if train_source else 0)
    return out


class Progress:
    """Progress of one ``run_grid`` call: ``finished(cell)`` after each cell; a context manager for the heartbeat."""

    def __init__(
        self,
        cells: list[Cell],
        cache_dir: Path,
        log: Any,
        heartbeat_s: float = HEARTBEAT_S,
        estimate_s: float | None = None,
    ) -> None:
        self.weight = weights(cells, cache_dir)
        self.estimate_s = estimate_s
        self.total, self.done, self.count, self.n = sum(self.weight.values()), 0, 0, len(cells)
        self.log, self.heartbeat_s = log, heartbeat_s
        self.start = self.last = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def status(self) -> str:
        """``elapsed 3m10s, about 6m40s left``: from the finished cells, before the first from ``estimate_s``."""
        elapsed = time.monotonic() - self.start
        if self.done and self.total > self.done:
            return f"elapsed {clock(elapsed)}, about {clock(elapsed * (self.total - self.done) / self.done)} left"
        if self.done:
            return f"elapsed {clock(elapsed)}"
        if self.estimate_s is None:
            return f"elapsed {clock(elapsed)}, estimate after the first cell"
        if elapsed < self.estimate_s:
            return f"elapsed {clock(elapsed)}, about {clock(self.estimate_s - elapsed)} left (calibrated estimate)"
        return f"elapsed {clock(elapsed)}, longer than the calibrated estimate of {clock(self.estimate_s)}"

    def finished(self, cell: Cell) -> str:
        with self._lock:
            self.count += 1
            self.done += self.weight.get(cell.key, 0)
            self.last = time.monotonic()
            return self.status()

    def _beat(self) -> None:
        while not self._stop.wait(min(self.heartbeat_s, 5.0)):
            with self._lock:
                if time.monotonic() - self.last < self.heartbeat_s:
                    continue
                self.last = time.monotonic()
                line = f"... running: {self.count}/{self.n} cells finished; {self.status()}"
            print(line, file=self.log, flush=True)

    def __enter__(self) -> Progress:
        isatty = getattr(self.log, "isatty", None)
        if not (isatty and isatty()):  # a terminal has tqdm bars instead
            self._thread = threading.Thread(target=self._beat, name="ntbench-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
