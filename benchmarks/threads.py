"""How many CPU threads a cell's process uses, from the CPUs this job was given (stdlib only).

On a shared machine torch's default (every core) oversubscribes: with one other busy process on 2
cores, pixel LEEP took 12x longer with 2 threads than with 1 (issue 16). The choice, in order:
``--threads N``; else ``OMP_NUM_THREADS`` (a per-process count); else the CPUs this process may run
on (its affinity mask, capped by ``SLURM_CPUS_PER_TASK``) divided among the cells running at once.
CPU results depend bitwise on the count, so the store records it (``threads`` column).
"""

from __future__ import annotations

import os

__all__ = ["allowed_cpus", "threads_per_cell"]


def _positive(name: str) -> int | None:
    text = os.environ.get(name, "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def allowed_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by ``SLURM_CPUS_PER_TASK`` when set."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    slurm = _positive("SLURM_CPUS_PER_TASK")
    return min(cpus, slurm) if slurm else cpus


def threads_per_cell(concurrent: int = 1, requested: int = 0) -> int:
    """Intra-op threads for each of ``concurrent`` cells: ``requested``, else OMP_NUM_THREADS, else a fair share."""
    if requested > 0:
        return requested
    return _positive("OMP_NUM_THREADS") or max(1, allowed_cpus() // max(1, concurrent))
