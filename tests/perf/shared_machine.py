"""Training steps on a shared CPU: ms per step with 0, 1 and 2 busy competitor processes, per thread policy.

Run from the repository root: ``PYTHONPATH=. python tests/perf/shared_machine.py [--competitors 0 1 2]``.
Each measurement runs in fresh processes (the OpenMP variables must be set before torch is imported):
MONAI UNet (the default suite's backbone), Adam, batch 8 of 64x64, 20 steps after 3 warm-up steps. A
policy with ``cells`` > 1 runs that many such processes side by side, started together after their
warm-up. The competitors are pure-Python busy loops that end on their own after ``COMPETITOR_S``.
Cells per hour of the default suite follow from the step time: 3,000 training steps over 6 cells
(2 sources x 600 + 6 targets x 300), spread over the policy's side-by-side cells.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPETITOR_S = 300  # a competitor ends on its own after this, even if its parent is killed
SUITE_STEPS, SUITE_CELLS = 3000, 6  # the default suite: 2 x 600 source + 6 x 300 target steps, 6 cells
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS")
PASSIVE = {"OMP_WAIT_POLICY": "PASSIVE"}


@dataclass(frozen=True)
class Policy:
    """How the cells of a run use the CPU: torch threads per cell, cells side by side, OpenMP variables."""

    name: str
    threads: int  # 0: the cores idle at the start (``free_cpus``), at least 1
    cells: int = 1
    env: dict[str, str] = field(default_factory=dict)

    def suite_cells_per_hour(self, ms_per_step: float) -> float:
        """Cells per hour of the default suite at this step time (training steps only)."""
        return SUITE_CELLS * 3600 / (SUITE_STEPS / self.cells * ms_per_step / 1000)


POLICIES = {
    p.name: p
    for p in (
        Policy("2 threads, default (spin)", 2),
        Policy("2 threads, GOMP_SPINCOUNT=1000", 2, env={"GOMP_SPINCOUNT": "1000"}),
        Policy("2 threads, GOMP_SPINCOUNT=10000", 2, env={"GOMP_SPINCOUNT": "10000"}),
        Policy("2 threads, OMP_WAIT_POLICY=PASSIVE", 2, env=PASSIVE),
        Policy("1 thread, 1 cell", 1),
        Policy("1 thread x 2 cells side by side", 1, cells=2),
        Policy("free cores at start (1-2 threads)", 0),
        Policy("1 thread, 1 cell, PASSIVE", 1, env=PASSIVE),
        Policy("1 thread x 2 cells, PASSIVE (ntbench's default)", 1, cells=2, env=PASSIVE),
    )
}
BEFORE = POLICIES["2 threads, default (spin)"]  # torch's default before issue 24 (InProcess, every core)
AFTER = POLICIES["1 thread x 2 cells, PASSIVE (ntbench's default)"]  # benchmarks/threads.py on 2 cores
AFTER_ONE_CELL = POLICIES["1 thread, 1 cell, PASSIVE"]  # a run of one cell


@contextmanager
def competitors(n: int, seconds: float = COMPETITOR_S) -> Iterator[list[subprocess.Popen]]:
    """``n`` busy pure-Python processes for at most ``seconds``; stopped when the block ends."""
    code = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]
    try:
        time.sleep(0.5 if n else 0)  # let them reach their loop
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def measure(policy: Policy, steps: int = 20, warmup: int = 3, timeout_s: float = 300) -> tuple[float, int]:
    """(mean ms per step, threads of the first) of the policy's cells, timed together (each in a fresh process).

    Torch is imported before anything of ntbench, so the OpenMP variables are exactly the policy's. Workers
    still running after ``timeout_s`` are killed: the step time is then infinite.
    """
    env = {k: v for k, v in os.environ.items() if k not in WAIT_VARIABLES}
    env.update(policy.env, PYTHONPATH=str(ROOT))
    command = [sys.executable, __file__, "--worker", str(policy.threads), str(steps), str(warmup)]
    workers = [
        subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(policy.cells)
    ]
    timer = threading.Timer(timeout_s, lambda: [w.kill() for w in workers])
    timer.start()
    try:
        for worker in workers:  # each is warmed up and waits for the others
            if worker.stdout.readline().strip() != "ready":
                return math.inf, policy.threads
        for worker in workers:
            worker.stdin.write("go\n")
            worker.stdin.flush()
        lines = [worker.stdout.readline() for worker in workers]
        if not all(lines):
            return math.inf, policy.threads
        results = [json.loads(line) for line in lines]
        return sum(r["ms"] for r in results) / len(results), results[0]["threads"]
    finally:
        timer.cancel()
        for worker in workers:
            worker.kill()
            worker.wait()


def free_cpus(window_s: float = 0.5) -> int:
    """Cores left idle by other processes over ``window_s`` (from /proc/stat), at least 1."""

    def idle_total() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return values[3] + values[4], sum(values)

    idle0, total0 = idle_total()
    time.sleep(window_s)
    idle1, total1 = idle_total()
    return max(1, round((idle1 - idle0) / max(1, total1 - total0) * (os.cpu_count() or 1)))


def worker(threads: int, steps: int, warmup: int) -> None:
    """Warm up, say ``ready``, wait for ``go``, time ``steps`` steps and print ``{"ms": per step}``."""
    threads = threads or free_cpus()
    import torch

    from benchmarks.backbones import build_backbone
    from benchmarks.config import Budget
    from benchmarks.train import make_optimizer
    from methods import METHODS

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    budget = Budget()
    model = build_backbone("unet", 1, 2, size=budget.size).train()
    method = METHODS.get("finetune")()
    opt = make_optimizer(method.param_groups(model, budget.lr), budget)
    shape = (budget.batch_size, budget.size, budget.size)
    batch = {"image": torch.randn(shape[0], 1, *shape[1:]), "label": torch.randint(0, 2, shape)}

    def step() -> None:
        loss = method.loss(batch, model(batch["image"]), model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    print(json.dumps({"ms": (time.perf_counter() - start) / steps * 1e3, "threads": threads}), flush=True)


def load() -> str:
    """The 1-minute load average, for the record beside every number."""
    return f"{os.getloadavg()[0]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--competitors", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--policy", nargs="+", choices=sorted(POLICIES), default=list(POLICIES))
    parser.add_argument("--rounds", type=int, default=1, help="repeat the whole table; the median is reported")
    parser.add_argument("--worker", type=int, nargs=3, metavar=("THREADS", "STEPS", "WARMUP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    times: dict[tuple[str, int], list[float]] = {}
    loads: dict[tuple[str, int], list[str]] = {}
    for r in range(args.rounds):
        for n in args.competitors:
            with competitors(n):
                for name in args.policy:
                    ms, threads = measure(POLICIES[name])
                    times.setdefault((name, n), []).append(ms)
                    loads.setdefault((name, n), []).append(load())
                    print(
                        f"round {r}: {name}, {n} competitor(s): {ms:.0f} ms ({threads} threads), load {load()}",
                        file=sys.stderr,
                        flush=True,
                    )
    print("| policy | competitors | ms/step (median) | default suite cells/hour | load (1 min) |")
    print("|---|---:|---:|---:|---:|")
    for (name, n), spent in sorted(times.items(), key=lambda item: (item[0][1], list(POLICIES).index(item[0][0]))):
        ms = statistics.median(spent)
        cph = POLICIES[name].suite_cells_per_hour(ms)
        print(f"| {name} | {n} | {ms:.0f} | {cph:.0f} | {'/'.join(loads[name, n])} |", flush=True)


if __name__ == "__main__":
    main()
