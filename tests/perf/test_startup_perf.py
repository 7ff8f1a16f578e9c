"""Start-up of the command line: ``--help``, an option error and the ``--list-*`` options vs a bare ``python -c pass``.

Run: python -m pytest tests/perf/test_startup_perf.py --benchmark-only -q
Reported in ``extra_info``: seconds per call and the ratio to the bare interpreter measured in the same run.
Importing torch and MONAI took 6-30 s per call before the imports moved to where work starts (issue 17);
``--list-methods`` took 7-9 s (torch, MONAI, optuna) before it read the declarations from source (issue 23).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

ROOT = Path(__file__).resolve().parents[2]
CALLS = {
    "help": ["-m", "benchmarks.run", "--help"],
    "option_error": ["-m", "benchmarks.run", "--seeds", "-1"],
    "list_datasets": ["-m", "benchmarks.run", "--list-datasets"],
    "list_methods": ["-m", "benchmarks.run", "--list-methods"],
}


def _wall(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, check=False)
    return time.perf_counter() - start


@pytest.mark.parametrize("call", sorted(CALLS))
def test_startup(benchmark: BenchmarkFixture, call: str) -> None:
    reference = min(_wall(["-c", "pass"]) for _ in range(3))
    benchmark.pedantic(_wall, args=(CALLS[call],), rounds=3, iterations=1)
    seconds = benchmark.stats.stats.min
    benchmark.extra_info.update(
        command=" ".join(["python", *CALLS[call]]),
        seconds=round(seconds, 3),
        python_c_pass_s=round(reference, 3),
        ratio_to_bare_python=round(seconds / reference, 1),
    )
