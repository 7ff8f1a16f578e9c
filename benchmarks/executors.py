"""Executors: one cell function, one store, several ways to run a grid.

``execute_cell`` is the only thing a worker runs. The driver opens the dataset once
(preprocessing and validation happen up front) and ``publish``es it as a small JSON
spec that workers reopen without decoding anything. Executors yield one outcome per
cell; ``run_grid`` prints progress and writes a ``failed`` row for a worker that died
or raised without writing one.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Protocol

import torch

from benchmarks.cell import failed_frame, run_cell
from benchmarks.config import Cell
from benchmarks.core.device import resolve_device
from benchmarks.data import OpenDataset
from benchmarks.progress import Progress
from benchmarks.report import reporting
from benchmarks.sources import source_path
from benchmarks.store import LOST, Store
from benchmarks.threads import WAIT_VARIABLES
from datasets.base import DATASETS
from datasets.core.files import atomic_write

# (cell, state, detail): state is the cell's ok/failed, or "error" (the worker raised outside the
# cell; detail is the traceback) or "lost" (the worker died; detail says how).
Outcome = tuple[Cell, str, str]

_OPENED: dict[str, OpenDataset] = {}


class ExecutorError(RuntimeError):
    """An executor cannot run here (package missing, no cluster, no GPU)."""


@dataclass(frozen=True)
class Job:
    """What every worker needs besides its cell; absolute paths, valid on every node."""

    data_spec: Path
    store_root: Path
    cache_dir: Path
    keep_models: bool = False  # --save-models: each cell saves its fine-tuned weights (benchmarks.cell.model_path)


def publish(data: OpenDataset, root: Path, options: dict[str, Any], cache_dir: Path) -> Path:
    """Write the opened dataset's spec (adapter, cached subjects, split) once; returns its path.

    Workers reopen the dataset from it with ``open_spec`` (memoised per process), so they use
    the driver's split and cache and never re-decode a subject, not even a skipped bad one.
    """
    spec = {
        "name": data.name,
        "root": str(Path(root).resolve()),
        "options": options,
        "cached": {sid: str(Path(p).resolve()) for sid, p in data.cached.items()},
        "split": data.split,
        "skipped": data.skipped,
    }
    text = json.dumps(spec, sort_keys=True, default=str)
    path = Path(cache_dir).resolve() / "dataspecs" / f"{hashlib.sha1(text.encode()).hexdigest()[:16]}.json"
    if not path.exists():
        with atomic_write(path, "w") as fh:
            fh.write(text)
    _OPENED[str(path)] = data
    return path


def open_spec(path: Path) -> OpenDataset:
    """The dataset described by a ``publish``ed spec, opened once per process."""
    key = str(path)
    if key not in _OPENED:
        spec = json.loads(Path(path).read_text())
        adapter = DATASETS.get(spec["name"])(Path(spec["root"]), **spec["options"])
        cached = {sid: Path(p) for sid, p in spec["cached"].items()}
        skipped = [(sid, reason) for sid, reason in spec["skipped"]]
        _OPENED[key] = OpenDataset(spec["name"], adapter, cached, spec["split"], skipped)
    return _OPENED[key]


def execute_cell(
    cell: Cell, data_spec: Path, store_root: Path, cache_dir: Path, device: str = "auto", keep_model: bool = False
) -> str:
    """Run one cell in this process and write its rows; returns ``ok``, ``failed`` or ``skipped``.

    The entry point of every executor's workers (picklable, top level). The cell runs ``cell.threads``
    torch threads; its phase and step go to ``Store.progress_path`` for the driver's heartbeat.
    """
    store = Store(store_root)
    with reporting(store.progress_path(cell.key)):
        # --device text as the CLI checked it; ``auto`` is the first GPU this worker sees (its scheduler's), else CPU
        rows = run_cell(cell, open_spec(data_spec), store, Path(cache_dir), resolve_device(device), keep_model)
    return str(rows["status"].iloc[0])


class Executor(Protocol):
    """Runs cells somewhere and yields one ``Outcome`` per cell as it finishes."""

    label: str  # how the run summary names it, e.g. "local --jobs 2 (cpu, 1 thread(s) each)"

    def run(self, cells: list[Cell], job: Job) -> Iterator[Outcome]: ...


class InProcess:
    """``--executor local --jobs 1``: the cells one after another in the driver process."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.label = f"local --jobs 1 ({device})"

    def run(self, cells: list[Cell], job: Job) -> Iterator[Outcome]:
        for cell in cells:
            state = execute_cell(cell, job.data_spec, job.store_root, job.cache_dir, self.device, job.keep_models)
            yield cell, state, ""


def _exit_with(parent: int) -> None:
    """Watchdog thread of a pool worker: exit as soon as the driver is gone (killed, even by SIGKILL)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _pool_worker(conn: Connection, job: Job, device: str, parent: int) -> None:
    """Pool worker: receive a cell, run it, send back (state, detail); exit when the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the driver, which stops the workers
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    while True:
        try:
            cell = conn.recv()
        except (EOFError, OSError):
            return
        try:
            outcome = execute_cell(cell, job.data_spec, job.store_root, job.cache_dir, device, job.keep_models), ""
        except Exception:  # noqa: BLE001 - reported to the driver, which records the cell as failed
            outcome = "error", traceback.format_exc()
        conn.send(outcome)


class _Worker:
    """One spawned pool process pinned to a device, fed one cell at a time through its own pipe.

    It inherits the driver's environment, OpenMP's wait policy included (``benchmarks.threads``).
    """

    def __init__(self, device: str, job: Job) -> None:
        ctx = get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_pool_worker, args=(child, job, device, os.getpid()), daemon=True)
        self.proc.start()
        child.close()
        self.device = device
        self.cell: Cell | None = None

    def give(self, pending: deque[Cell]) -> bool:
        """Send the next pending cell; False if this worker died while idle (the cell stays pending)."""
        self.cell = pending.popleft() if pending else None
        if self.cell is None:
            return True
        try:
            self.conn.send(self.cell)
        except OSError:  # broken pipe or reset: the process is gone, so nothing of the cell ran
            pending.appendleft(self.cell)
            self.cell = None
            return False
        return True

    def outcome(self) -> tuple[str, str] | None:
        """(state, detail) once the cell is finished or the process died; None while it runs."""
        if self.conn.poll():
            try:
                return self.conn.recv()
            except (EOFError, OSError):  # the worker died: EOF, or a reset of its end of the socket
                self.proc.join(timeout=10)
        if self.proc.is_alive():
            return None
        code = self.proc.exitcode or 0
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        return "lost", f"worker process {self.proc.pid} on {self.device} died ({how})"

    def stop(self) -> None:
        self.conn.close()  # an idle worker reads EOF and exits; a busy one is killed
        self.proc.join(timeout=10 if self.cell is None else 0)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


def pool_devices(device: torch.device, cells_per_device: int) -> list[str]:
    """One entry per pool worker: ``cells_per_device`` on each visible GPU for ``cuda``, else on ``device``."""
    if device.type == "cuda" and device.index is None:
        return [f"cuda:{i}" for i in range(torch.cuda.device_count()) for _ in range(cells_per_device)]
    return [str(device)] * cells_per_device


class LocalPool:
    """``--executor local --jobs N``: N spawned worker processes, each pinned to one device.

    Several workers may share a device (``--cells-per-device``, ``pool_devices``): each is its own
    process with its own CUDA context and allocator, so a cell's numbers are those it has alone
    (same code, same thread count) and an out-of-memory error fails only the cell that raised it.
    A worker that dies is replaced (same device) and its cell reported ``lost``; workers exit
    when the driver does, even when it is SIGKILLed.
    """

    def __init__(self, devices: list[str], threads: int) -> None:
        self.devices = devices
        self.label = f"local --jobs {len(devices)} ({', '.join(sorted(set(devices)))}, {threads} thread(s) each)"

    def run(self, cells: list[Cell], job: Job) -> Iterator[Outcome]:
        pending = deque(cells)
        workers = [_Worker(device, job) for device in self.devices[: len(cells)]]
        try:
            for i in range(len(workers)):
                self._feed(workers, i, pending, job)
            while busy := [w for w in workers if w.cell is not None]:
                wait([w.conn for w in busy] + [w.proc.sentinel for w in busy])
                for i, worker in enumerate(workers):
                    if worker.cell is None or (result := worker.outcome()) is None:
                        continue
                    yield worker.cell, *result
                    if result[0] == "lost":
                        worker.cell = None
                        self._replace(workers, i, job)
                    self._feed(workers, i, pending, job)
        finally:
            for worker in workers:
                worker.stop()

    def _replace(self, workers: list[_Worker], i: int, job: Job) -> None:
        workers[i].stop()
        workers[i] = _Worker(workers[i].device, job)

    def _feed(self, workers: list[_Worker], i: int, pending: deque[Cell], job: Job) -> None:
        """Give worker ``i`` the next cell, replacing it if it died while idle (a few times at most)."""
        for _ in range(3):
            if workers[i].give(pending):
                return
            self._replace(workers, i, job)
        raise ExecutorError(f"worker processes on {workers[i].device} die before taking a cell")


class Slurm:
    """``--executor slurm``: one submitit job array, one cell per array task.

    ``cluster="local"`` runs the jobs as local processes with submitit's ``LocalExecutor``
    (how the tests run it). A job that raised comes back as ``error`` with submitit's trace;
    one that produced nothing (killed, timed out, node failure) as ``lost``. Jobs get the driver's
    environment (sbatch exports it), OpenMP's wait policy included.
    """

    def __init__(self, folder: Path, cluster: str, parameters: dict[str, Any], device: str) -> None:
        self.folder, self.cluster, self.parameters = folder, cluster, parameters
        self.device = device
        self.label = f"slurm ({'local processes' if cluster == 'local' else 'SLURM job array'})"

    def run(self, cells: list[Cell], job: Job) -> Iterator[Outcome]:
        import submitit
        from submitit.core.utils import FailedJobError

        executor = submitit.AutoExecutor(folder=self.folder, cluster=self.cluster)
        executor.update_parameters(**self.parameters)
        n = len(cells)
        with submitit.helpers.clean_env():  # a driver running inside a SLURM job must not pass on its allocation
            jobs = executor.map_array(
                execute_cell,
                cells,
                [job.data_spec] * n,
                [job.store_root] * n,
                [job.cache_dir] * n,
                [self.device] * n,
                [job.keep_models] * n,
            )
        print(f"submitted {n} job(s) ({jobs[0].job_id.split('_')[0]}...); logs in {self.folder}", file=sys.stderr)
        cell_of = {j.job_id: c for j, c in zip(jobs, cells)}
        for done in submitit.helpers.as_completed(jobs, poll_frequency=1 if self.cluster == "local" else 15):
            exc = done.exception()
            if exc is None:
                yield cell_of[done.job_id], done.result(), ""
            else:
                yield cell_of[done.job_id], "error" if isinstance(exc, FailedJobError) else "lost", str(exc)


class RayTasks:
    """``--executor ray``: one Ray task per cell, with one GPU when the cells run on CUDA.

    Connects to ``address`` (or ``RAY_ADDRESS``), or starts a local cluster of ``local_cpus``
    for the run; a Ray already initialised in this process is used as is. Each task reserves
    ``cpus`` CPUs, runs its cell's torch threads and gets the driver's OpenMP wait variables
    (``runtime_env``: Ray's workers do not inherit the driver's environment on a remote cluster).
    """

    def __init__(self, address: str | None, local_cpus: int, cpus: int, device: str) -> None:
        self.address, self.local_cpus, self.cpus, self.device = address, local_cpus, cpus, device
        self.label = f"ray ({address or os.environ.get('RAY_ADDRESS') or 'local cluster'})"

    def run(self, cells: list[Cell], job: Job) -> Iterator[Outcome]:
        import ray

        started = not ray.is_initialized()
        if started and (self.address or os.environ.get("RAY_ADDRESS")):
            ray.init(address=self.address)
        elif started:
            ray.init(num_cpus=self.local_cpus, include_dashboard=False)
        try:
            has_gpus = ray.cluster_resources().get("GPU", 0) > 0
            if self.device == "cuda" and not has_gpus:
                raise ExecutorError("--device cuda: the Ray cluster has no GPUs")
            device = "cuda" if self.device == "cuda" or (self.device == "auto" and has_gpus) else "cpu"
            task = self.remote(execute_cell, num_gpus=1 if device == "cuda" else 0)
            refs = {
                task.remote(c, job.data_spec, job.store_root, job.cache_dir, device, job.keep_models): c for c in cells
            }
            while refs:
                (ref,), _ = ray.wait(list(refs), num_returns=1)
                cell = refs.pop(ref)
                try:
                    yield cell, ray.get(ref), ""
                except ray.exceptions.RayTaskError as exc:
                    yield cell, "error", str(exc)
                except ray.exceptions.RayError as exc:
                    yield cell, "lost", f"{type(exc).__name__}: {exc}"
        finally:
            if started:
                ray.shutdown()

    def remote(self, function: Any, num_gpus: int = 0) -> Any:
        """``function`` as a Ray task of this executor: its CPUs, ``num_gpus`` and the driver's wait variables."""
        import ray

        env = {name: os.environ[name] for name in WAIT_VARIABLES if name in os.environ}
        return ray.remote(function).options(num_cpus=self.cpus, num_gpus=num_gpus, runtime_env={"env_vars": env})


@dataclass
class Tally:
    """Cells of one executor run by outcome, and its wall time."""

    ok: int = 0
    failed: int = 0
    lost: int = 0
    declined: int = 0  # skipped by their method (``Method.check``), each with its reason
    skipped: int = 0
    wall_s: float = 0.0

    def line(self, label: str) -> str:
        lost = f" ({self.lost} lost: rerun to redo)" if self.lost else ""
        declined = f", {self.declined} skipped by their method" if self.declined else ""
        return (
            f"{label}: {self.ok} ok, {self.failed} failed{lost}{declined}, {self.skipped} skipped (already done) "
            f"in {self.wall_s:.1f} s"
        )


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def waves(cells: list[Cell], cache_dir: Path) -> list[list[Cell]]:
    """Split cells so that no worker sits waiting on another's source model.

    The first wave holds one cell per source model still to train (it trains the model) and
    every cell whose source model exists or that needs none; the second holds the rest.
    """
    first, second, claimed = [], [], set()
    for cell in cells:
        path = source_path(cache_dir, cell) if cell.source_task else None
        if path is None or path not in claimed or path.exists():
            first.append(cell)
            claimed.add(path)
        else:
            second.append(cell)
    return [wave for wave in (first, second) if wave]


def run_grid(
    executor: Executor, cells: list[Cell], job: Job, has_groups: bool, log: Any, estimate_s: float | None = None
) -> Tally:
    """Run ``cells`` with ``executor`` (in ``waves``), printing one line per finished cell to ``log``.

    ``estimate_s`` (``plan.estimate``) gives the time left before any training step is done; after that,
    the heartbeat says each running cell's phase and step (``benchmarks.progress``).

    A cell whose worker raised or died without writing rows gets one ``failed`` row with the
    reason; a died worker's row is marked ``LOST`` so the next run redoes the cell.
    """
    store, tally, start = Store(job.store_root), Tally(), time.time()
    before = {c.key: _stamp(store.path(c.key)) for c in cells}
    progress = Progress(cells, job.cache_dir, log, estimate_s=estimate_s, store=store)
    outcomes = (outcome for wave in waves(cells, job.cache_dir) for outcome in executor.run(wave, job))
    with progress:  # elapsed time and what remains, per cell and (in a log) as a heartbeat
        for i, (cell, state, detail) in enumerate(outcomes, 1):
            if state in ("error", "lost") and _stamp(store.path(cell.key)) == before[cell.key]:
                error = f"{LOST}: {detail}" if state == "lost" else f"WorkerError: {detail}"
                store.write(cell.key, failed_frame(cell, has_groups, error, "", time.time() - start))
            state = store.state(cell.key) or "lost"
            rows = store.read_cell(cell.key) if store.path(cell.key).exists() else None
            wall = f" ({rows['wall_s'].iloc[0]:.1f} s)" if rows is not None else ""
            print(
                f"[{i}/{len(cells)}] {cell.method} {cell.transfer} seed={cell.seed} k={cell.few_shot}: "
                f"{state}{wall}; {progress.finished(cell)}",
                file=log,
                flush=True,
            )
            if state != "ok" and rows is not None:
                print("    " + rows["error"].iloc[0].splitlines()[0][:300], file=log, flush=True)
            tally.ok += state == "ok"
            tally.failed += state not in ("ok", "skipped")
            tally.lost += state == "lost"
            tally.declined += state == "skipped"
    tally.wall_s = time.time() - start
    return tally
