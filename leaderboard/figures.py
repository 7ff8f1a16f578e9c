"""Figures: critical-difference diagram and learning curve."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from leaderboard.stats import nemenyi_groups  # noqa: E402

DPI = 150


REFERENCE_COLOUR = (0.45, 0.45, 0.45, 1.0)


def palette(variants: list[str], reference: str | None) -> dict[str, tuple]:
    """A fixed colour per variant (by name order, so it is stable across builds); grey for the reference."""
    cmap = plt.get_cmap("tab10")
    others = [v for v in sorted(variants) if v != reference]
    return {v: cmap(i % 10) for i, v in enumerate(others)} | {reference: REFERENCE_COLOUR}


def cd_diagram(mean_ranks: pd.Series, cd: float, path: Path, subtitle: str) -> None:
    """Demsar (2006, Fig. 1) critical-difference diagram: rank axis, labelled methods, CD cliques."""
    ranks = mean_ranks.sort_values()
    k = len(ranks)
    groups = nemenyi_groups(ranks.to_numpy(), cd)
    n_left = math.ceil(k / 2)
    row_gap, first_row = 0.32, 0.35 + 0.14 * len(groups)
    bottom = first_row + row_gap * (n_left - 1) + 0.25
    fig = plt.figure(figsize=(6.5, 0.55 * (bottom + 1.15)))
    ax = fig.add_axes((0.24, 0.02, 0.52, 0.96))
    ax.set_xlim(1 - 0.02 * k, k + 0.02 * k)
    ax.set_ylim(bottom, -1.15)
    ax.axis("off")
    ax.hlines(0, 1, k, color="black", linewidth=1.2)
    for tick in np.arange(1, k + 0.01, 0.5):
        major = float(tick).is_integer()
        ax.vlines(tick, 0, -0.1 if major else -0.05, color="black", linewidth=1)
        if major:
            ax.text(tick, -0.17, f"{int(tick)}", ha="center", va="bottom", fontsize=10)
    ax.text((1 + k) / 2, -0.5, "mean rank (1 = best)", ha="center", va="bottom", fontsize=9, color="#444")
    ax.hlines(-0.85, 1, 1 + cd, color="#b2182b", linewidth=2)
    ax.vlines([1, 1 + cd], -0.9, -0.8, color="#b2182b", linewidth=2)
    ax.text(1 + cd / 2, -0.92, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=9, color="#b2182b")
    for i, (first, last) in enumerate(groups):
        y = 0.22 + 0.14 * i
        ax.hlines(y, ranks.iloc[first] - 0.03, ranks.iloc[last] + 0.03, color="black", linewidth=3.5)
    names = list(ranks.index)
    left, right = names[:n_left], names[n_left:][::-1]
    for side, members in (("left", left), ("right", right)):
        for row, name in enumerate(members):
            rank, y = ranks[name], first_row + row_gap * row
            x_end = 1 - 0.09 * (k - 1) if side == "left" else k + 0.09 * (k - 1)
            ax.plot([rank, rank, x_end], [0, y, y], color="#333", linewidth=1, clip_on=False)
            ax.plot(rank, 0, "o", color="#333", markersize=3.5, clip_on=False)
            label = f"{name}  {rank:.2f}" if side == "left" else f"{rank:.2f}  {name}"
            ha = "right" if side == "left" else "left"
            offset = (-0.012 if side == "left" else 0.012) * (k - 1)
            ax.text(x_end + offset, y, label, ha=ha, va="center", fontsize=10, clip_on=False)
    fig.suptitle(subtitle, fontsize=9, color="#444", y=-0.02, va="top")
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def learning_curve_plot(
    curve: pd.DataFrame, order: list[str], colours: dict, ylabel: str, title: str, path: Path
) -> None:
    """Metric against few-shot K per method (K = 0 shown as 'all') in one dataset and budget, with CI bars."""
    shots = sorted(curve["few_shot"].unique(), key=lambda k: (k == 0, k))
    position = {k: i for i, k in enumerate(shots)}
    methods = [m for m in order if m in set(curve["method"])]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for j, method in enumerate(methods):
        part = curve[curve["method"] == method].sort_values("few_shot", key=lambda s: s.map(position))
        x = part["few_shot"].map(position) + 0.06 * (j - (len(methods) - 1) / 2)
        linestyle = "--" if colours[method] == REFERENCE_COLOUR else "-"
        _interval_series(ax, x, part["mean"], part, colours[method], method, linestyle)
    ax.set_xticks(range(len(shots)), [str(k) if k else "all" for k in shots])
    _finish_series_plot(fig, ax, "few-shot K (target training subjects)", ylabel, title, path)


def dial_plot(curve: pd.DataFrame, colours: dict, ylabel: str, title: str, path: Path) -> None:
    """Each method's difference to scratch against the dial level, with CI bars; below 0 is negative transfer."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    methods = sorted(curve["method"].unique())
    ax.axhline(0.0, color="black", linewidth=0.8)
    for j, method in enumerate(methods):
        part = curve[curve["method"] == method].sort_values("level")
        x = part["level"] + 0.008 * (j - (len(methods) - 1) / 2)
        _interval_series(ax, x, part["mean_diff"], part, colours[method], method)
    _finish_series_plot(fig, ax, "dial level c (0 = no conflict, 1 = full conflict)", ylabel, title, path)


def _interval_series(
    ax: plt.Axes, x: pd.Series, centre: pd.Series, part: pd.DataFrame, colour: str, label: str, linestyle: str = "-"
) -> None:
    """One method's points with their ``ci_low``/``ci_high`` bars (the learning-curve and dial figures' style)."""
    ax.errorbar(
        x,
        centre,
        yerr=[centre - part["ci_low"], part["ci_high"] - centre],
        marker="o",
        markersize=4,
        capsize=3,
        linewidth=1.4,
        linestyle=linestyle,
        color=colour,
        label=label,
    )


def _finish_series_plot(fig: plt.Figure, ax: plt.Axes, xlabel: str, ylabel: str, title: str, path: Path) -> None:
    """Axis labels, title, grid and legend of a per-method series figure; write it and close it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="best")
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
