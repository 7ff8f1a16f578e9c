"""The runner. Importing it first makes idle OpenMP threads sleep unless the user chose (``benchmarks.threads``)."""

from benchmarks.threads import configure_openmp

configure_openmp()  # before torch loads in any process of ntbench: the CLI, pool, SLURM and Ray workers, tools
