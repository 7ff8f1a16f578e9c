"""The bottom layer every ntbench package may import: registry, atomic files, device resolution.

Standard library only at import time (``device`` imports torch inside its function), so the leaderboard
and ``--help`` stay free of torch. Nothing here imports another ntbench module (docs/design.md §Layers).
"""
