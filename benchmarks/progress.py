"""Signs of life during a run: elapsed time and an estimate of what remains, per cell and as a heartbeat.

Each cell weighs its training steps (target steps, plus source steps for the cell that trains a source
model still missing from the cache). A running cell reports its phase (source training, fine-tuning,
prediction) and step to a small file (``benchmarks.report``; ``Store.progress_path``), which
the driver reads wherever the cell runs (local workers, SLURM, Ray: the store is shared). The estimate is
elapsed time x remaining weight / weight done, the training steps of running cells included, so it falls
while a cell runs; before any step is done, the calibrated estimate of ``plan.estimate`` minus the elapsed
time. When the log is not a terminal (no tqdm bars) a heartbeat line with every running cell's phase and
step is printed whenever nothing else was for ``heartbeat_s`` seconds.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from benchmarks.config import Cell
from benchmarks.sources import source_path
from benchmarks.store import Store

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
        path = source_path(cache_dir, cell) if cell.source_task else None
        train_source = path is not None and path not in claimed and not path.exists()
        claimed.add(path)
        out[cell.key] = cell.budget.target_steps + (cell.budget.source_steps if train_source else 0)
    return out


class Progress:
    """Progress of one ``run_grid`` call: ``finished(cell)`` after each cell; a context manager for the heartbeat.

    ``store`` is where the cells report their phase and step (``benchmarks.report``); without it only finished cells
    count.
    """

    def __init__(
        self,
        cells: list[Cell],
        cache_dir: Path,
        log: Any,
        heartbeat_s: float = HEARTBEAT_S,
        estimate_s: float | None = None,
        store: Store | None = None,
    ) -> None:
        self.cells, self.weight = cells, weights(cells, cache_dir)
        self.estimate_s, self.store = estimate_s, store
        self.total, self.done, self.count, self.n = sum(self.weight.values()), 0, 0, len(cells)
        self.log, self.heartbeat_s = log, heartbeat_s
        self.start = self.last = time.monotonic()
        self.since = time.time()  # a report older than this run is a killed run's leftover
        self.finished_keys: set[str] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def running(self) -> list[tuple[Cell, dict]]:
        """(cell, its last report) for every cell of the run that is running now."""
        out = []
        for cell in self.cells if self.store is not None else []:
            if cell.key in self.finished_keys:
                continue
            path = self.store.progress_path(cell.key)
            try:
                if path.stat().st_mtime >= self.since:
                    out.append((cell, json.loads(path.read_text())))
            except (OSError, ValueError):
                continue  # not started, or finished meanwhile
        return out

    def status(self, running: list[tuple[Cell, dict]] | None = None) -> str:
        """``elapsed 3m10s, about 6m40s left``: from the weight done (finished cells and the training steps of
        ``running`` ones), before any from ``estimate_s``."""
        elapsed = time.monotonic() - self.start
        done = self.done + sum(min(self.weight.get(c.key, 0), int(r.get("trained", 0))) for c, r in running or [])
        if done and self.total > done:
            return f"elapsed {clock(elapsed)}, about {clock(elapsed * (self.total - done) / done)} left"
        if done:
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
            self.finished_keys.add(cell.key)
            if self.store is not None:
                self.store.progress_path(cell.key).unlink(missing_ok=True)
            self.last = time.monotonic()
            return self.status(self.running())

    def heartbeat(self) -> str:
        """``... running: 0/6 cells finished; finetune A->B seed=0: source training step 340/600; elapsed ...``."""
        running = self.running()
        phases = "".join(
            f"{c.method} {c.transfer} seed={c.seed}: {r.get('phase')} step {r.get('step')}/{r.get('total')}; "
            for c, r in running
        )
        return f"... running: {self.count}/{self.n} cells finished; {phases}{self.status(running)}"

    def _beat(self) -> None:
        while not self._stop.wait(min(self.heartbeat_s, 5.0)):
            with self._lock:
                if time.monotonic() - self.last < self.heartbeat_s:
                    continue
                self.last = time.monotonic()
                line = self.heartbeat()
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
