"""Statistics, tables and figures from an ntbench results store (reads only the store; no torch).

Run ``python -m leaderboard.build --results DIR --out DIR2``; in Python, ``load_store(path)`` then
``compare(frame, control)`` gives the comparison table (see ``docs/statistics.md``). Both are imported
on first use, so ``benchmarks.store`` (which imports ``leaderboard.store``) does not load scipy.
"""

from __future__ import annotations

__all__ = ["compare", "load_store"]


def __getattr__(name: str):
    if name == "compare":
        from leaderboard.comparisons import compare

        return compare
    if name == "load_store":
        from leaderboard.store import load_store

        return load_store
    raise AttributeError(f"module 'leaderboard' has no attribute {name!r}")
