"""Statistics, tables and figures from an ntbench results store (reads only the store).

Run ``python -m leaderboard.build --results DIR --out DIR2``; see ``leaderboard.build``.
"""
