"""What the runner's command lines and the leaderboard share: CLI options, the run's settings, the store schema,
device resolution.

Standard library only at import time (``device`` imports torch inside its function), so the leaderboard and
``--help`` stay free of torch; it imports nothing of ntbench but the bottom layer, ``datasets.core``
(docs/design.md §Layers).
"""
