"""What every command-line tool of ntbench shares: the default cache folder and one-line argument errors."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import NoReturn

DEFAULT_CACHE = Path(os.environ.get("NTBENCH_CACHE", Path.home() / ".cache" / "ntbench"))


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr (``error: ...``) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see --help)\n")
