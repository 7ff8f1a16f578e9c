"""The one error type the leaderboard's commands turn into a one-line message and exit status 2."""


class LeaderboardError(ValueError):
    """Bad input: a missing folder, an empty store, an unknown method, metric or region."""
