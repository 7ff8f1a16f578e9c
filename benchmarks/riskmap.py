"""``python -m benchmarks.riskmap``: does a transferability map find where a transfer goes wrong? One transfer's figure.

Top row: one target training slice of each distinct subject (the slice through the middle of its foreground), the
ground truth outlined and, where the dataset has it (brainsim's dial), the ground-truth risk outlined dashed.
Bottom row: the ground-truth risk pooled like the maps (the share of target training slices at risk at each pixel;
only where the dataset has it), the location map (one value per stride x stride window, all target training slices
pooled; Tan et al., ICIP 2023) of the frozen source model by LEEP and by the best other estimator with a map (the
highest AUROC; without ground truth the first registered, NCE), each with its AUROC against the ground truth in the
title (``benchmarks.estimate``'s per-subject AUROC of -map, averaged over subjects, as the leaderboard shows it),
and LEEP of the fine-tuned model. Every map is computed on the target *training* slices of the seed's few-shot
draw. Panels are lettered, the figure is transparent outside the brain and is written as PNG and PDF at 300 dpi.

Models are the run's: the source model of the suite's ``finetune`` cell (same key) from the cache, and that cell's
fine-tuned model from ``CACHE/targets/<cell key>.pt``, where ``benchmarks.run --save-models`` keeps it; either is
trained and saved there only when absent. What was loaded and what was trained is printed.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import matplotlib

from benchmarks.threads import configure_openmp

configure_openmp()  # the runner's start-up, before torch loads below (benchmarks.threads)
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from benchmarks import sources  # noqa: E402
from benchmarks.backbones import build_backbone  # noqa: E402
from benchmarks.cell import fine_tune, model_path, save_model  # noqa: E402
from benchmarks.config import Cell  # noqa: E402
from benchmarks.core.device import DeviceError, resolve_device  # noqa: E402
from benchmarks.core.options import (  # noqa: E402
    DEFAULT_CACHE,
    OneLineParser,
    add_split_fractions,
    check_minimums,
)
from benchmarks.data import OpenDataset, open_suite_data  # noqa: E402
from benchmarks.estimate import RISK_THRESHOLD, finetune_cells, subject_map_scores  # noqa: E402
from benchmarks.grid import apply_settings  # noqa: E402
from benchmarks.sources import source_model  # noqa: E402
from benchmarks.suite import SuiteError, load_suite  # noqa: E402
from benchmarks.threads import threads_per_cell  # noqa: E402
from datasets.base import DataError  # noqa: E402
from datasets.core.registry import UnknownNameError  # noqa: E402
from datasets.slices import SliceSet  # noqa: E402
from methods.estimators import estimate_maps, map_names  # noqa: E402
from methods.model import SegModel  # noqa: E402
from methods.transferability import expand_windows  # noqa: E402

LABEL_COLOURS = ("#00e5ff", "#ffd600", "#ff3d00", "#76ff03")
RISK_COLOUR = "#ff1744"
FONT = 9  # every text of the figure: titles, legends, colour-bar labels and ticks
DPI = 300
SUFFIXES = (".png", ".pdf")


def subject_slices(train_set: SliceSet, n: int) -> np.ndarray:
    """Indices of one slice for each of the first ``n`` subjects (never one subject twice): the middle one, by z, of
    its slices with foreground (of all its slices when none has)."""
    picks = []
    for s in np.unique(train_set.subject_index)[:n]:
        rows = np.flatnonzero((train_set.subject_index == s) & (train_set.labels > 0).any(axis=(1, 2)))
        rows = rows if len(rows) else np.flatnonzero(train_set.subject_index == s)
        picks.append(rows[np.argsort(train_set.z[rows])][len(rows) // 2])
    return np.asarray(picks)


def fine_tuned_model(cell: Cell, data: OpenDataset, cache_dir: Path, device: torch.device) -> tuple[SegModel, str]:
    """The ``finetune`` cell's model from ``model_path`` (the run's ``--save-models``), else trained and saved
    there; and what happened."""
    path = model_path(cache_dir, cell)
    if path.exists():
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = build_backbone(cell.backbone, 1, state["num_classes"], size=cell.budget.size)
        model.load_state_dict(state["model"])
        return model, f"fine-tuned model: loaded {path}"
    model, _, _ = fine_tune(cell, data, cache_dir, device)
    save_model(model, path)
    steps = cell.budget.target_steps
    return model, f"fine-tuned model: not in the cache, trained finetune ({steps} target steps), saved {path}"


def _masked(image: np.ndarray, inside: np.ndarray) -> np.ma.MaskedArray:
    """``image`` (H, W) transposed for display, masked (drawn transparent) outside ``inside``."""
    return np.ma.masked_where(~inside.T, image.T)


def _colormap(name: str) -> matplotlib.colors.Colormap:
    return plt.get_cmap(name).with_extremes(bad=(0, 0, 0, 0))  # masked pixels (outside the brain): transparent


def _title(ax: plt.Axes, letter: str, text: str) -> None:
    ax.set_title(f"$\\mathbf{{{letter}}}$  {text}", fontsize=FONT)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_frame_on(False)


def figure(
    cell: Cell, data: OpenDataset, cache_dir: Path, device: torch.device, n_slices: int, stride: int
) -> tuple[Figure, list[str]]:
    """Draw the figure of the ``finetune`` cell ``cell``; returns it and what was loaded or trained."""
    src, task = data.task(cell.source_task), data.task(cell.target_task)
    train_ids = data.train_ids(task, cell.few_shot, cell.seed)
    train_set = data.slices(task, train_ids)
    had_source = sources.source_path(cache_dir, cell).exists()
    source, source_path = source_model(cell, data, cache_dir, device, src)
    done = [f"source model: {'loaded' if had_source else 'not in the cache, trained and saved'} {source_path}"]
    tuned, what = fine_tuned_model(cell, data, cache_dir, device)
    done.append(what)
    risk = data.risk(src, task, train_ids) if data.has_risk(src, task) else None
    names = map_names()
    common = {"stride": stride, "num_classes": task.num_classes, "device": device}
    maps = estimate_maps(source.to(device).eval(), train_set, names, **common)
    tuned_leep = estimate_maps(tuned.to(device).eval(), train_set, ["leep"], **common)["leep"]
    auc = {}
    if risk is not None:
        for name, window_map in maps.items():
            values = [r["auroc"] for r in subject_map_scores(window_map, train_set, risk, stride)]
            auc[name] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    others = [n for n in names if n != "leep"]
    if auc:  # the best AUROC first; ties and no ground truth keep the registry's order (NCE first)
        others.sort(key=lambda n: -np.nan_to_num(auc[n], nan=-1.0))
    other = others[0] if others else None

    shape = tuple(train_set.images.shape[-2:])
    brain = (train_set.images[:, 0] != 0).any(axis=0)  # inside the brain on some training slice
    full = {n: expand_windows(torch.from_numpy(m), shape, stride).numpy() for n, m in maps.items()}
    full["tuned"] = expand_windows(torch.from_numpy(tuned_leep), shape, stride).numpy()
    n_subjects = len(train_ids)
    panels: list[tuple[np.ndarray, str, str, tuple[float, float], str]] = []
    if risk is not None:
        share = (risk > RISK_THRESHOLD).mean(axis=0)
        top_share = float(share.max()) or 1.0
        title = f"ground-truth risk\n(share of {len(train_set)} slices)"
        panels.append((share, title, "magma", (0.0, top_share), "share of slices at risk"))
    low = float(min(full[n][brain].min() for n in ["leep", "tuned", *([other] if other else [])]))
    for name, label in (("leep", "LEEP"), (other, (other or "").upper())):
        if name is None:
            continue
        score = f"\nAUROC {auc[name]:.2f}" if name in auc else ""
        panels.append((full[name], f"{label}, source model{score}", "viridis", (low, 0), "window score"))
    panels.append((full["tuned"], "LEEP, fine-tuned model", "viridis", (low, 0), "window score"))

    pick = subject_slices(train_set, n_slices)
    cols = max(len(pick), len(panels))
    fig = plt.figure(figsize=(2.5 * cols, 6.0), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1.1])
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    for ax, row in zip(np.atleast_1d(top.subplots(1, len(pick))), pick):
        image = train_set.images[row, 0]
        ax.imshow(_masked(image, image != 0), cmap=_colormap("gray"), origin="lower", interpolation="nearest")
        for c in range(1, task.num_classes):
            mask = (train_set.labels[row] == c).T
            if mask.any():
                colour = LABEL_COLOURS[(c - 1) % len(LABEL_COLOURS)]
                ax.contour(mask, levels=[0.5], colors=colour, linewidths=0.9, origin="lower")
        at_risk = risk is not None and risk[row] > RISK_THRESHOLD
        if np.any(at_risk):
            ax.contour(at_risk.T, levels=[0.5], colors=RISK_COLOUR, linewidths=0.9, linestyles="--", origin="lower")
        sid = train_set.subject_ids[train_set.subject_index[row]]
        _title(ax, next(letters), f"{sid}, z = {train_set.z[row]}")
    legend = [Line2D([], [], color=LABEL_COLOURS[i % len(LABEL_COLOURS)], label=r) for i, r in enumerate(task.regions)]
    if risk is not None:
        legend.append(Line2D([], [], color=RISK_COLOUR, linestyle="--", label="ground-truth risk"))
    top.legend(handles=legend, loc="outside right center", fontsize=FONT, frameon=False)
    for ax, (image, title, cmap, (vmin, vmax), label) in zip(np.atleast_1d(bottom.subplots(1, len(panels))), panels):
        shown = ax.imshow(
            _masked(image, brain), cmap=_colormap(cmap), origin="lower", interpolation="nearest", vmin=vmin, vmax=vmax
        )
        _title(ax, next(letters), title)
        bar = bottom.colorbar(shown, ax=ax, shrink=0.8)
        bar.ax.tick_params(labelsize=FONT)
        bar.set_label(label, fontsize=FONT)
    auroc = "AUROC: of −map against the risk, per subject, averaged" if risk is not None else "no ground-truth risk"
    fig.suptitle(
        f"{cell.transfer} ({cell.dataset}, seed {cell.seed}, K = {cell.few_shot}, {cell.budget.target_steps} target "
        f"steps)\nmaps over {stride}x{stride} windows of the {len(train_set)} target training slices of {n_subjects} "
        f"subject(s); {auroc}",
        fontsize=FONT,
    )
    return fig, done


def save(fig: Figure, out: Path) -> list[Path]:
    """``out`` as PNG and PDF at ``DPI``, transparent where nothing is drawn (outside the brain); closes ``fig``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out.with_suffix(suffix) for suffix in SUFFIXES]
    for path in paths:
        fig.savefig(path, dpi=DPI, transparent=True)
    plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m benchmarks.riskmap", description=__doc__)
    p.add_argument("--suite", default="default", help="suite giving dataset and budget (default: default)")
    p.add_argument("--source", help="source task (default: the suite's first transfer)")
    p.add_argument("--target", help="target task (default: the suite's first transfer)")
    p.add_argument("--data-root", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--few-shot", type=int, default=None, help="K target training subjects (default: the suite's)")
    p.add_argument("--steps", type=int, help="the runner's --steps of the run whose models to use (a smoke run)")
    add_split_fractions(p, "the suite's")
    p.add_argument("--slices", type=int, default=4, help="training subjects shown, one slice each (default 4)")
    p.add_argument("--stride", type=int, default=4, help="window side of the location map (default 4)")
    p.add_argument("--out", type=Path, default=Path("riskmap.png"), help="figure path; .png and .pdf are written")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    try:
        check_minimums(args, {"slices": 1, "stride": 1, "seed": 0, "few_shot": 0, "steps": 1})
        if args.out.suffix not in ("", *SUFFIXES):
            raise ValueError(f"--out {args.out}: give a .png or .pdf path (both are written)")
        suite = load_suite(args.suite)
        source, target = suite.transfers[0]
        changes: dict = {"transfers": [(args.source or source, args.target or target)], "seeds": [args.seed]}
        if args.few_shot is not None:
            changes["few_shot"] = [args.few_shot]
        suite = apply_settings(replace(suite, **changes), args)  # --steps: a smoke run, as the runner's
        device = resolve_device(args.device)
        threads = threads_per_cell()  # as the runner's default: the same source model (key and weights)
        torch.set_num_threads(threads)
        data = open_suite_data(suite, args.data_root, args.cache_dir)
        cell = finetune_cells(suite, data, threads)[0]  # the run's finetune cell: its key names the saved model
        fig, done = figure(cell, data, args.cache_dir, device, args.slices, args.stride)
    except (SuiteError, DataError, DeviceError, UnknownNameError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    paths = save(fig, args.out)
    for line in done:
        print(line)
    print(f"figure: {', '.join(map(str, paths))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
