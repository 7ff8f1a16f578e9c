"""``python -m benchmarks.riskmap``: a figure like Fig. 2 of Duan et al. (ICASSP 2025) for one transfer.

Top row: target training slices of distinct subjects (or slices spread over the tumour when there are
fewer subjects than panels) with the ground truth outlined and named in a legend. Bottom row: the
location-level LEEP map (one LEEP per stride x stride window, all target training slices pooled; Tan et
al., ICIP 2023) of the frozen source model and of the fine-tuned model, and the TRM weight map
W = exp(-LEEP) the source model gives. Every LEEP is computed on the target *training* slices of the
given seed, the data a TRM cell's ``leep`` column uses. The fine-tuned model is the ``finetune`` cell's,
read from ``CACHE/targets/<cell key>.pt`` when present, else trained and saved there; what was loaded
and what was trained is printed.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from benchmarks.backbones import build_backbone  # noqa: E402
from benchmarks.cell import fine_tune  # noqa: E402
from benchmarks.config import Cell  # noqa: E402
from benchmarks.core.device import resolve_device  # noqa: E402
from benchmarks.core.files import atomic_write  # noqa: E402
from benchmarks.core.options import DEFAULT_CACHE, OneLineParser, add_split_fractions  # noqa: E402
from benchmarks.core.registry import UnknownNameError  # noqa: E402
from benchmarks.data import OpenDataset, open_suite_data  # noqa: E402
from benchmarks.grid import cell_identity  # noqa: E402
from benchmarks.sources import source_key, source_model  # noqa: E402
from benchmarks.suite import SuiteError, load_suite  # noqa: E402
from benchmarks.threads import threads_per_cell  # noqa: E402
from datasets.base import DataError  # noqa: E402
from datasets.slices import SliceDataset, SliceSet  # noqa: E402
from methods.leep_driver import compute_location_map  # noqa: E402

LABEL_COLOURS = ("#00e5ff", "#ffd600", "#ff3d00", "#76ff03")


def spread_slices(train_set: SliceSet, n: int) -> np.ndarray:
    """Indices of ``n`` slices: distinct subjects first, each subject's picks evenly spread over its tumour."""
    subjects = np.unique(train_set.subject_index)
    per_subject = -(-n // len(subjects))
    picks: list[list[int]] = []
    for s in subjects:
        rows = np.flatnonzero((train_set.subject_index == s) & (train_set.labels > 0).any(axis=(1, 2)))
        rows = rows if len(rows) else np.flatnonzero(train_set.subject_index == s)
        rows = rows[np.argsort(train_set.z[rows])]
        inner = (np.arange(1, per_subject + 1) / (per_subject + 1) * (len(rows) - 1)).round().astype(int)
        picks.append(list(dict.fromkeys(rows[inner])))  # interior quantiles: no edge slice of the tumour
    order = [p[i] for i in range(per_subject) for p in picks if i < len(p)]  # round-robin over subjects
    return np.asarray(order[:n])


def fine_tuned_model(
    cell: Cell, data: OpenDataset, cache_dir: Path, device: torch.device
) -> tuple[torch.nn.Module, str]:
    """The ``finetune`` cell's model from ``cache_dir/targets``, else trained and saved there; and what happened."""
    path = cache_dir / "targets" / f"{cell.key}.pt"
    if path.exists():
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = build_backbone(cell.backbone, 1, state["num_classes"], size=cell.budget.size)
        model.load_state_dict(state["model"])
        return model, f"fine-tuned model: loaded {path}"
    model, _, _ = fine_tune(cell, data, cache_dir, device)
    with atomic_write(path) as fh:
        torch.save({"model": model.cpu().state_dict(), "num_classes": model.num_classes}, fh)
    steps = cell.budget.target_steps
    return model, f"fine-tuned model: not in the cache, trained finetune ({steps} target steps), saved {path}"


def figure(
    cell: Cell, data: OpenDataset, cache_dir: Path, device: torch.device, n_slices: int, stride: int, out: Path
) -> tuple[Path, list[str]]:
    """Draw the figure for the ``finetune`` cell ``cell``; returns the path and what was loaded or trained."""
    task = data.task(cell.target_task)
    train_ids = data.train_ids(task, cell.few_shot, cell.seed)
    train_set = data.slices(task, train_ids)
    had_source = (cache_dir / "sources" / f"{source_key(cell)}.pt").exists()
    source, source_path = source_model(cell, data, cache_dir, device)
    done = [f"source model: {'loaded' if had_source else 'not in the cache, trained and saved'} {source_path}"]
    tuned, what = fine_tuned_model(cell, data, cache_dir, device)
    done.append(what)
    loader = DataLoader(SliceDataset(train_set), batch_size=32)
    maps = {}
    for name, model in (("source", source), ("fine-tuned", tuned)):
        model.to(device).eval()
        maps[name] = compute_location_map(model, loader, task.num_classes, stride, device).cpu().numpy()
    pick = spread_slices(train_set, n_slices)

    cols = max(len(pick), 3)
    fig, axes = plt.subplots(2, cols, figsize=(2.3 * cols, 5.2), squeeze=False, layout="constrained")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_visible(False)
    for col, row in enumerate(pick):
        ax = axes[0, col]
        ax.set_visible(True)
        ax.imshow(train_set.images[row, 0].T, cmap="gray", origin="lower", interpolation="nearest")
        for c in range(1, task.num_classes):
            colour = LABEL_COLOURS[(c - 1) % len(LABEL_COLOURS)]
            mask = (train_set.labels[row] == c).T
            if mask.any():
                ax.contour(mask, levels=[0.5], colors=colour, linewidths=0.8, origin="lower")
        sid = train_set.subject_ids[train_set.subject_index[row]]
        ax.set_title(f"{sid}\nz = {train_set.z[row]}", fontsize=7)
    legend = [Patch(color=LABEL_COLOURS[i % len(LABEL_COLOURS)], label=r) for i, r in enumerate(task.regions)]
    axes[0, 0].legend(handles=legend, title="ground truth", fontsize=7, title_fontsize=7, loc="lower left")
    low = min(float(m.min()) for m in maps.values())
    panels = [
        (maps["source"], "LEEP per window, source model", "viridis", (low, 0)),
        (maps["fine-tuned"], "LEEP per window, fine-tuned model", "viridis", (low, 0)),
        (np.exp(-maps["source"]), "TRM weight exp(−LEEP), source", "magma", None),
    ]
    for col, (img, title, cmap, lim) in enumerate(panels):
        ax = axes[1, col]
        ax.set_visible(True)
        im = ax.imshow(
            img.T, cmap=cmap, origin="lower", interpolation="nearest", vmin=lim and lim[0], vmax=lim and lim[1]
        )
        ax.set_title(f"{title}\n(mean {img.mean():.3f})", fontsize=8)
        fig.colorbar(im, ax=ax, shrink=0.8)
    n_subjects = len(np.unique(train_set.subject_index))
    fig.suptitle(
        f"{cell.transfer} ({cell.dataset}, seed {cell.seed}, K = {cell.few_shot}, {cell.budget.target_steps} target "
        f"steps): LEEP over {stride}x{stride} windows of the {len(train_set)} target training slices of "
        f"{n_subjects} subjects",
        fontsize=9,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out, done


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m benchmarks.riskmap", description=__doc__)
    p.add_argument("--suite", default="default", help="suite giving dataset and budget (default: default)")
    p.add_argument("--source", help="source task (default: the suite's first transfer)")
    p.add_argument("--target", help="target task (default: the suite's first transfer)")
    p.add_argument("--data-root", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--few-shot", type=int, default=None, help="K target training subjects (default: the suite's)")
    p.add_argument("--steps", type=int, help="override the training budgets")
    add_split_fractions(p, "the suite's")
    p.add_argument("--slices", type=int, default=4, help="training slices shown (default 4)")
    p.add_argument("--stride", type=int, default=4, help="window side of the location map (default 4)")
    p.add_argument("--out", type=Path, default=Path("riskmap.png"))
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    try:
        if args.slices < 1 or args.stride < 1:
            raise ValueError(f"--slices and --stride must be >= 1, got {args.slices} and {args.stride}")
        suite = load_suite(args.suite)
        if args.split_fractions is not None:
            suite = replace(suite, split_fractions=args.split_fractions)
        source, target = suite.transfers[0]
        budget = (
            suite.budget
            if args.steps is None
            else replace(suite.budget, source_steps=args.steps, target_steps=args.steps)
        )
        cell = Cell(
            suite=suite.name,
            dataset=suite.dataset,
            source_task=args.source or source,
            target_task=args.target or target,
            method="finetune",
            backbone=suite.backbone,
            seed=args.seed,
            few_shot=suite.few_shot[0] if args.few_shot is None else args.few_shot,
            budget=budget,
            dataset_options=suite.dataset_options,
            split_seed=suite.split_seed,
            split_fractions=suite.split_fractions,
            threads=threads_per_cell(),  # as the runner's default: the same source model (key and weights)
        )
        torch.set_num_threads(cell.threads)
        device = resolve_device(args.device)
        data = open_suite_data(suite, args.data_root, args.cache_dir)
        data.task(cell.source_task)
        cell = replace(cell, **cell_identity(data, None))  # the same source model and key as the run's cells
        path, done = figure(cell, data, args.cache_dir, device, args.slices, args.stride, args.out)
    except (SuiteError, DataError, UnknownNameError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in done:
        print(line)
    print(f"figure: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
