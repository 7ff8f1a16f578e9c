"""The runner: CLI, grid, cells, backbones, training loop, executors, store writer, interop (docs/design.md §Layers).

Importing it does nothing: its start-up (OpenMP's wait policy, ``benchmarks.threads.configure_openmp``) runs in
its entry points, so the leaderboard and the lower layers, which import ``benchmarks.core``, never run it.
"""
