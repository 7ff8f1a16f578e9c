"""How a cell's process uses the CPU: torch threads, cells side by side, OpenMP's wait policy (stdlib only).

Measured on a 2-core machine (README, Performance; issue 24): torch's OpenMP runtime (GNU libgomp in
the PyPI wheel) spins its waiting threads, so with 2 threads and one other busy process a step took
10-30x its quiet time; one thread per cell never waits for a descheduled thread, and two one-thread
cells side by side finish more cells per hour than one two-thread cell. Hence the defaults: one
intra-op thread per cell (``--threads N`` or ``OMP_NUM_THREADS`` override it), as many cells side by
side as the job has CPUs (``--jobs``), and a sleeping OpenMP wait policy for any process that runs
more threads, set before torch is imported unless the user set one. CPU results depend bitwise on the
thread count, so it is part of the cell key when it is not 1 (``Cell.threads``).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from benchmarks.core.settings import default

__all__ = ["DEFAULT_THREADS", "allowed_cpus", "configure_openmp", "default_jobs", "threads_per_cell", "wait_policy"]

DEFAULT_THREADS: int = default("threads")  # per cell unless --threads or OMP_NUM_THREADS say otherwise
# OpenMP variables that decide how idle threads wait (libgomp reads the first two, Intel's runtime the last);
# a user who sets any of them keeps their choice.
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
DEFAULT_WAIT = {"OMP_WAIT_POLICY": "PASSIVE"}


def _positive(name: str) -> int | None:
    text = os.environ.get(name, "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def allowed_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by ``SLURM_CPUS_PER_TASK`` when set."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    slurm = _positive("SLURM_CPUS_PER_TASK")
    return min(cpus, slurm) if slurm else cpus


def threads_per_cell(requested: int = 0) -> int:
    """Intra-op threads of each cell: ``requested`` (``--threads``), else OMP_NUM_THREADS, else ``DEFAULT_THREADS``."""
    if requested > 0:
        return requested
    return _positive("OMP_NUM_THREADS") or DEFAULT_THREADS


def default_jobs(threads: int) -> int:
    """Cells side by side when ``--jobs`` is not given: the CPUs this job was given, ``threads`` each."""
    return max(1, allowed_cpus() // max(1, threads))


def configure_openmp(environ: MutableMapping[str, str] = os.environ) -> None:
    """Make idle OpenMP threads sleep (``DEFAULT_WAIT``) unless the user set a wait variable.

    Call it before torch is imported (the OpenMP runtime reads its variables when it loads): every entry point of
    the runner does, first (``benchmarks.run``, ``check_method``, ``estimate``, ``riskmap``, the interop tools);
    processes started afterwards inherit it (pool workers, SLURM jobs; Ray tasks get it in their runtime_env).
    """
    if not any(name in environ for name in WAIT_VARIABLES):
        environ.update(DEFAULT_WAIT)


def wait_policy(environ: MutableMapping[str, str] = os.environ) -> str:
    """The wait variables in effect, as stored per row (``omp_wait``): ``OMP_WAIT_POLICY=PASSIVE``, or ``default``."""
    return " ".join(f"{name}={environ[name]}" for name in WAIT_VARIABLES if name in environ) or "default"
