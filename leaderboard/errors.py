"""The one error type the commands turn into a one-line message and exit status 2, and their parser."""

import argparse


class LeaderboardError(ValueError):
    """Bad input: a missing folder, an empty store, an unknown method, metric or region."""


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")
