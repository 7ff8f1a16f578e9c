"""Default locations shared by the command-line tools (no heavy imports)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_CACHE = Path(os.environ.get("NTBENCH_CACHE", Path.home() / ".cache" / "ntbench"))
